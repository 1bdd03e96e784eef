"""Packets and the .ltk file, sources, pipelines, MQTT, WebRTC, the receiver and the CLI."""
