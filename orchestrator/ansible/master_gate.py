"""The gate between a jailed Ansible and the run's SSH master: sessions on the VM, nothing else.

A jail has no network (jail.ts); its one way out is the run's SSH master connection to the VM.
The master's control socket speaks OpenSSH's multiplexing protocol (PROTOCOL.mux), which can do
more than run commands on the VM: a remote forward (`ssh -O forward -R`) makes the master itself,
outside the jail, connect wherever the requester says, and proxy mode hands the requester the
whole connection protocol. This gate listens on a socket of its own (the only one bound into the
jail) and relays to the master what a command on the VM needs: the hello, new sessions (with the
stdin, stdout and stderr they pass) and alive checks. Forwards, stdio forwards and proxy mode are
refused (MUX_S_PERMISSION_DENIED) and recorded; a request to stop or terminate the master (`meta:
reset_connection` sends one) is answered as done without reaching it: the master is the
harness's.

usage: master_gate.py MASTER_SOCKET GATE_SOCKET REFUSALS_FILE
Runs until killed or its parent (the harness) is gone; one thread per connection.
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

refusals_lock = threading.Lock()


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


def record(refusals, what):
    with refusals_lock, open(refusals, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"what": what, "detail": "through the run's SSH master: only commands on the VM pass the jail's gate"}) + "\n")


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


def client_to_master(client, master, refusals):
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
            record(refusals, what)
            client.sendall(packet(MUX_S_PERMISSION_DENIED, request_id, f"boma-it: {what} is not allowed from the jail".encode()))


def serve(connection, master_path, refusals):
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
        client_to_master(connection, master, refusals)
    except (EOFError, OSError):
        pass
    finally:
        for end in (connection, master):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        connection.close()


def main(master_path, gate_path, refusals):
    if os.path.exists(gate_path):
        os.unlink(gate_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(gate_path)
    finally:
        os.umask(old)
    listener.listen(64)
    listener.settimeout(1.0)
    parent = os.getppid()
    print("ready", flush=True)
    try:
        # A harness killed outright leaves no one to stop the gate: it goes when its parent does.
        while os.getppid() == parent:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            connection.settimeout(None)
            threading.Thread(target=serve, args=(connection, master_path, refusals), daemon=True).start()
    finally:
        listener.close()
        try:
            os.unlink(gate_path)
        except OSError:
            pass


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        main(*sys.argv[1:])
    except KeyboardInterrupt:
        pass
