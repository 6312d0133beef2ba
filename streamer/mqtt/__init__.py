"""MQTT output: broker URLs, the bounded outbox, the supervised publisher, an embedded broker.

Import the submodules directly (``streamer.mqtt.publisher``...): aiomqtt and amqtt load lazily.
"""
