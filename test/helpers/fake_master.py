"""A fake SSH master connection for unit tests: it stands for the run's master to the VM.

It listens on the run's control socket and speaks OpenSSH's multiplexing protocol to real ssh
clients (PROTOCOL.mux): the hello, alive checks, and sessions, whose command it runs here with the
stdin, stdout and stderr the client passed and BOMA_FAKE_VM=1 (or the MARKER given: which VM, when
a test has several) in its environment (so a task can tell it ran "on the VM"), then sends the
exit status. Each session's command is appended to a log
(one JSON line). Anything else is answered with a failure and logged too. A jailed Ansible's
real ssh reaches it only through the jail's gate, as it would reach the VM.

usage: fake_master.py CONTROL_SOCKET LOG_FILE [MARKER]
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_C_ALIVE_CHECK = 0x10000004
MUX_S_FAILURE = 0x80000003
MUX_S_EXIT_MESSAGE = 0x80000004
MUX_S_ALIVE = 0x80000005
MUX_S_SESSION_OPENED = 0x80000006

lock = threading.Lock()


def read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def send(sock, kind, *fields):
    body = struct.pack(">I", kind)
    for field in fields:
        body += struct.pack(">I", field) if isinstance(field, int) else struct.pack(">I", len(field)) + field
    sock.sendall(struct.pack(">I", len(body)) + body)


def strings(body, count):
    values, offset = [], 0
    for _ in range(count):
        (length,) = struct.unpack(">I", body[offset : offset + 4])
        values.append(body[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return values, offset


def log(path, entry):
    with lock, open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def serve(connection, log_path):
    sessions = 0
    try:
        send(connection, MUX_MSG_HELLO, 4)
        while True:
            (length,) = struct.unpack(">I", read_exactly(connection, 4))
            body = read_exactly(connection, length)
            (kind,) = struct.unpack(">I", body[:4])
            if kind == MUX_MSG_HELLO:
                continue
            (request_id,) = struct.unpack(">I", body[4:8])
            if kind == MUX_C_ALIVE_CHECK:
                send(connection, MUX_S_ALIVE, request_id, os.getpid())
                continue
            if kind != MUX_C_NEW_SESSION:
                log(log_path, {"refused": hex(kind)})
                send(connection, MUX_S_FAILURE, request_id, b"fake master: not supported")
                continue
            # reserved, want tty, X11, agent, subsystem (bools), escape char, terminal, command
            rest = body[8:]
            (_reserved,), offset = strings(rest, 1)
            offset += 4 * 4 + 4
            (_term, command), _ = strings(rest[offset:], 2)
            fds = []
            for _ in range(3):
                _data, received, _flags, _address = socket.recv_fds(connection, 1, 1)
                fds.extend(received)
            sessions += 1
            send(connection, MUX_S_SESSION_OPENED, request_id, sessions)
            text = command.decode("utf-8", "replace")
            log(log_path, {"command": text})
            process = subprocess.run(["/bin/sh", "-c", text], stdin=fds[0], stdout=fds[1], stderr=fds[2], env={**os.environ, "BOMA_FAKE_VM": MARKER}, check=False)
            for fd in fds:
                os.close(fd)
            send(connection, MUX_S_EXIT_MESSAGE, sessions, process.returncode & 0xFF)
            # As a real master does: the passenger waits for the close after the exit status.
            return
    except (EOFError, OSError):
        pass
    finally:
        connection.close()


def main(control_path, log_path):
    if os.path.exists(control_path):
        os.unlink(control_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(control_path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, log_path), daemon=True).start()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # What BOMA_FAKE_VM says "on the VM": which VM, when a test has several.
    MARKER = sys.argv[3] if len(sys.argv) > 3 else "1"
    main(sys.argv[1], sys.argv[2])
