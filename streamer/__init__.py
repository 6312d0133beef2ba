"""llm-sap live service: video in, online action clips, NHFM memory, recommendations over MQTT."""
