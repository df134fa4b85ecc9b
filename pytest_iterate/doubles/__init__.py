"""Test doubles: endpoints that stand in for a real LLM server. The library never imports them.

mock/           the simulated OpenAI-compatible endpoint (one core, a respx and a loopback front end)
cassettes/      record real answers once, replay them offline (a Transport)
loopback.py     a neutral fixed-latency server, for measuring the harness itself
"""
