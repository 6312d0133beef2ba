"""Streaming benchmarks and test drivers, run as ``python -m streamer.benchmarks.NAME``: replay and
live latency (``pipeline``); replay vs decode, live latency per broker and planning overhead in
one run (``performance``); fault injection (``chaos``); PyAV decode (``decode``); MQTT latency
(``mqtt_latency``); the segmenter (``segmenter``); the 100k-frame soak (``soak``); WebRTC ingest
(``webrtc``); and the headless-Chromium driver and WebRTC test client they and the tests use.
Nothing that ships imports this package (an import-linter contract)."""
