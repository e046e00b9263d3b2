"""Start and stop the real backing services (etcd, Redis) from PATH.

Used by `mooring up` and by the test fixtures, so tests run the very code
that newcomers run. Every process gets free loopback ports, its own data
directory and a log file; nothing is left behind by `stop()`.

One name for the pieces, each in a module of its own: the etcd cluster
(`_etcdcluster`) and its authentication (`_etcdauth`), the Redis server
(`_redisserver`), their TLS identity (`_servertls`) and the process and
port helpers they share (`_serviceprocs`).
"""

from __future__ import annotations

from mooring._etcdauth import EtcdAuth
from mooring._etcdcluster import EtcdCluster
from mooring._redisserver import RedisServer, redacted
from mooring._servertls import ServerTLS
from mooring._serviceprocs import (
    INSTALL_HINT,
    PLACED_PORTS,
    MissingBinaryError,
    free_port,
    require_binary,
    stop_process,
    wait_tcp,
)

__all__ = [
    "INSTALL_HINT",
    "PLACED_PORTS",
    "EtcdAuth",
    "EtcdCluster",
    "MissingBinaryError",
    "RedisServer",
    "ServerTLS",
    "free_port",
    "redacted",
    "require_binary",
    "stop_process",
    "wait_tcp",
]
