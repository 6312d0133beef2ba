"""llm-sap live service: frame sources (files, RTSP, WebRTC, synthetic), recognizers, the causal
segmenter, one pipeline per room feeding NHFM memory to the planner, MQTT publishing with its
JSON Schemas, the OR page, and the live commands (``commands/``: serve, replay, demo). It
imports ``planner`` only; its benchmarks live apart in ``benchmarks/``."""
