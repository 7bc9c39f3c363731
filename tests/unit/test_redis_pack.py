"""redis_split packs commands with hiredis directly: the bytes redis-py's own packing gives."""

from __future__ import annotations

import pytest
import redis
from redis.connection import Connection
from redis.exceptions import DataError

from livecode import redis_split

COMMANDS = [
    ("XADD", "lc:events:é", "MAXLEN", "~", 1000, "*", "k", "status", "d", '{"status": "QUEUED"}'),
    ("EXPIRE", "lc:events:é", 86400),
    ("LPUSH", "queue", b"\x00\xffbytes"),
    ("EVALSHA", "abc", 2, "k1", "k2", 1733460000.123456, 1, 2**70, -1.5),
]


def test_the_packed_bytes_are_redis_pys():
    conn = Connection()
    assert redis_split._hiredis_pack is not None  # hiredis is a dependency (redis[hiredis])
    assert b"".join(redis_split._pack(conn, COMMANDS)) == b"".join(conn.pack_commands(COMMANDS))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_an_argument_hiredis_does_not_take_is_refused_by_redis_py_as_before(bad):
    with pytest.raises(DataError):
        redis_split._pack(Connection(), [("SET", "k", bad)])


def test_another_encoding_goes_through_redis_pys_encoder():
    conn = redis.Redis(encoding="latin-1").connection_pool.make_connection()
    assert b"".join(redis_split._pack(conn, [("SET", "k", "é")])) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"


@pytest.mark.parametrize("name", ["CLIENT SETINFO", b"CLIENT SETINFO"])
def test_a_command_name_with_a_space_is_split_as_redis_py_splits_it(name):
    conn = Connection()
    commands = [(name, "LIB-NAME", "livecode"), ("PING",)]
    assert b"".join(redis_split._pack(conn, commands)) == b"".join(conn.pack_commands(commands))
