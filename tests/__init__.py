"""The test suite: tiny models built locally, a real mosquitto, real video, headless Chromium."""
