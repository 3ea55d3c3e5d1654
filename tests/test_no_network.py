"""The suite runs with sockets disabled (pyproject's pytest options): prove the guard is active."""

import socket

import pytest
from pytest_socket import SocketBlockedError, SocketConnectBlockedError


def test_outbound_connections_are_blocked():
    with pytest.raises((SocketBlockedError, SocketConnectBlockedError)):  # loopback alone is allowed
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed


def test_hub_libraries_are_offline():
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("HF_DATASETS_OFFLINE") == "1"
