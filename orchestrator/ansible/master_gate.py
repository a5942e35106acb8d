"""The jail's doors to the harness: commands on the VM through the run's SSH master, and a line
for telling the harness what only the jail sees. Nothing else leaves a jail (jail.ts).

The master door. The run's master's control socket speaks OpenSSH's multiplexing protocol
(PROTOCOL.mux), which can do more than run commands on the VM: a remote forward (`ssh -O
forward -R`) makes the master itself, outside the jail, connect wherever the requester says, and
proxy mode hands the requester the whole connection protocol. This gate listens on a socket of
its own and relays to the master what a command on the VM needs: the hello, new sessions (with
the stdin, stdout and stderr they pass) and alive checks. Forwards, stdio forwards and proxy mode
are refused (MUX_S_PERMISSION_DENIED) and recorded; a request to stop or terminate the master
(`meta: reset_connection` sends one) is answered as done without reaching it: the master is the
harness's.

The telling door. One JSON object per line, each answered `ok` once it is written down:
`{"kind": "secret", "values": [...]}` (a vault plaintext Ansible decrypted: appended to the
secrets file, which the harness reads before it redacts any later output line, so the answer
comes only once it is there) or a confinement record (`refusal`, `note`, `connection`: appended to
the records file). The jail cannot reach either file: they are outside it, opened here, never
through a link.

usage: master_gate.py MASTER_SOCKET GATE_SOCKET TELL_SOCKET RECORDS_FILE SECRETS_FILE
Runs until killed or its parent (the harness) is gone; one thread per connection, at most
MAX_CONNECTIONS at a time.
"""
import json
import os
import signal
import socket
import struct
import sys
import threading

MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_C_ALIVE_CHECK = 0x10000004
MUX_C_TERMINATE = 0x10000005
MUX_C_OPEN_FWD = 0x10000006
MUX_C_CLOSE_FWD = 0x10000007
MUX_C_NEW_STDIO_FWD = 0x10000008
MUX_C_STOP_LISTENING = 0x10000009
MUX_C_PROXY = 0x1000000F
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002

RELAYED = {MUX_MSG_HELLO, MUX_C_NEW_SESSION, MUX_C_ALIVE_CHECK}
ANSWERED = {MUX_C_TERMINATE: "a request to end the master", MUX_C_STOP_LISTENING: "a request to close the master's socket"}
REFUSED = {
    MUX_C_OPEN_FWD: "a port forward",
    MUX_C_CLOSE_FWD: "closing a port forward",
    MUX_C_NEW_STDIO_FWD: "a stdio forward (-W)",
    MUX_C_PROXY: "proxy mode (-O proxy)",
}
# A session passes its stdin, stdout and stderr after its request.
FDS_AFTER = {MUX_C_NEW_SESSION: 3}
MAX_PACKET = 256 * 1024
MAX_LINE = 1024 * 1024
MAX_CONNECTIONS = 256
RECORD_KINDS = {"refusal", "note", "connection"}

files_lock = threading.Lock()
connections = threading.BoundedSemaphore(MAX_CONNECTIONS)


def read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def packet(kind, request_id, *strings):
    body = struct.pack(">II", kind, request_id) + b"".join(struct.pack(">I", len(text)) + text for text in strings)
    return struct.pack(">I", len(body)) + body


def append(path, line):
    """Appends a line to a file of the harness's, never through a link (a jail could plant one)."""
    with files_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (line + "\n").encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)


def record(records, what):
    append(records, json.dumps({"kind": "refusal", "what": what, "detail": "through the run's SSH master: only commands on the VM pass the jail's gate"}))


def master_to_client(master, client):
    try:
        while True:
            data = master.recv(65536)
            if not data:
                break
            client.sendall(data)
    except OSError:
        pass
    finally:
        for end in (client, master):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def client_to_master(client, master, records):
    while True:
        (length,) = struct.unpack(">I", read_exactly(client, 4))
        if length < 4 or length > MAX_PACKET:
            return
        body = read_exactly(client, length)
        (kind,) = struct.unpack(">I", body[:4])
        request_id = struct.unpack(">I", body[4:8])[0] if len(body) >= 8 else 0
        if kind in RELAYED:
            master.sendall(struct.pack(">I", length) + body)
            for _ in range(FDS_AFTER.get(kind, 0)):
                data, fds, _flags, _address = socket.recv_fds(client, 1, 1)
                if not fds:
                    return
                try:
                    socket.send_fds(master, [data or b"\0"], fds)
                finally:
                    for fd in fds:
                        os.close(fd)
        elif kind in ANSWERED:
            client.sendall(packet(MUX_S_OK, request_id))
        else:
            what = REFUSED.get(kind, f"a multiplexing request of type {kind:#x}")
            record(records, what)
            client.sendall(packet(MUX_S_PERMISSION_DENIED, request_id, f"boma-it: {what} is not allowed from the jail".encode()))


def serve(connection, master_path, records):
    master = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        master.connect(master_path)
    except OSError:
        # No master (the VM is rebooting, the harness is starting a new one): the client falls back
        # to a connection of its own, which the jail's missing network refuses; it tries again.
        connection.close()
        master.close()
        return
    threading.Thread(target=master_to_client, args=(master, connection), daemon=True).start()
    try:
        client_to_master(connection, master, records)
    except (EOFError, OSError):
        pass
    finally:
        for end in (connection, master):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        connection.close()


def tell(connection, records, secrets):
    """Takes JSON lines from the jail; each written down, then answered `ok` (`no` when malformed)."""
    pending = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return
            pending += chunk
            if len(pending) > MAX_LINE and b"\n" not in pending:
                return
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                try:
                    message = json.loads(line.decode("utf-8", "surrogateescape"))
                    kind = message.get("kind")
                    if kind == "secret" and isinstance(message.get("values"), list) and all(isinstance(value, str) for value in message["values"]):
                        append(secrets, json.dumps(message["values"]))
                    elif kind in RECORD_KINDS:
                        append(records, json.dumps(message))
                    else:
                        raise ValueError(kind)
                    connection.sendall(b"ok\n")
                except (ValueError, AttributeError, TypeError):
                    connection.sendall(b"no\n")
    except OSError:
        pass
    finally:
        connection.close()


def listen(path):
    if os.path.lexists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    listener.settimeout(1.0)
    return listener


def accept_forever(listener, handler, args, parent):
    # A harness killed outright leaves no one to stop the gate: it goes when its parent does.
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        connection.settimeout(None)
        if not connections.acquire(blocking=False):
            connection.close()
            continue

        def run(connection=connection):
            try:
                handler(connection, *args)
            finally:
                connections.release()

        threading.Thread(target=run, daemon=True).start()


def main(master_path, gate_path, tell_path, records, secrets):
    gate = listen(gate_path)
    teller = listen(tell_path)
    parent = os.getppid()
    threading.Thread(target=accept_forever, args=(teller, tell, (records, secrets), parent), daemon=True).start()
    print("ready", flush=True)
    try:
        accept_forever(gate, serve, (master_path, records), parent)
    finally:
        for listener, path in ((gate, gate_path), (teller, tell_path)):
            listener.close()
            try:
                os.unlink(path)
            except OSError:
                pass


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.stderr.write(__doc__)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        main(*sys.argv[1:])
    except KeyboardInterrupt:
        pass
