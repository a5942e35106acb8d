"""The only ssh Ansible runs during a boma-it apply: it reaches the test VMs, or nothing.

confine.ts writes a small program per apply that runs this file with the apply's settings (a
JSON file: the real ssh, the port and user, and for each VM of the apply its address, the run's
key for it and the options that pin it; an apply of one host has one).
Ansible's argv (its ssh_args, the repo's ansible.cfg, ANSIBLE_SSH_ARGS, connection variables)
is judged as OpenSSH itself reads it (`ssh -G`, the user's ssh config left out):

- a destination, port or user other than a VM's, a config file (-F), a control socket (-S), a
  stdio forward (-W), another identity, or an option with a side effect of its own: refused before
  anything runs (exit 255, a line on stderr, and a refusal told to the harness's teller, outside
  the jail, which fails the apply);
- host key pinning, the run's key only, no agent, no jump host, no forwarding: forced, whatever
  the argv says (OpenSSH keeps the first value of an option, and these come first); what was
  overridden is noted for the run's log, and where each connection went is told too.

Then the real ssh runs with the forced options of the VM asked for in front of Ansible's own: it
joins that VM's connection through the jail's gate to it (never becoming a master itself: in the
jail there is no network to connect with).
"""
import json
import os
import socket
import subprocess
import sys

# ssh(1)'s options, as its getopt string has them (those followed by ':' take a value).
SSH_GETOPT = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
WITH_VALUE = {SSH_GETOPT[i] for i in range(len(SSH_GETOPT) - 1) if SSH_GETOPT[i + 1] == ":"}

# Flags refused before anything runs: they take a connection out of the harness's hands, or have
# an effect of their own before any check (-E creates its log file as ssh parses its options,
# `ssh -G` included), or set what the forced options cannot (-M is applied as read, not first-wins).
REFUSED_FLAGS = {
    "F": "a config file of its own (-F)",
    "W": "a stdio forward (-W)",
    "w": "a tunnel device (-w)",
    "G": "printing its configuration (-G)",
    "Q": "a query (-Q)",
    "E": "a log file of its own (-E)",
    "M": "becoming a master connection (-M)",
}

# Control commands (-O) a play may send: `meta: reset_connection` sends `stop`. Answered here;
# the master is the harness's, and from the jail only commands on the VM pass its gate.
ANSWERED_CONTROL = {"check": "Master running (boma-it: the run's connection)", "exit": "Exit request sent.", "stop": "Stop listening request sent."}


def options_of(argv):
    """(flag, value) pairs and the destination of an ssh argv, read as ssh(1) reads it: options,
    the destination, then options again unless `--` ended them, then the remote command (which
    may begin with `-` after a `--`). Combined flags (`-tt`, `-oX=y`, `-p2222`) are split."""
    pairs, index, destination, terminated = [], 0, None, False
    while True:
        while index < len(argv):
            arg = argv[index]
            if arg == "--":
                terminated = True
                index += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            letters, position = arg[1:], 0
            while position < len(letters):
                flag = letters[position]
                if flag in WITH_VALUE:
                    value = letters[position + 1 :]
                    if value == "":
                        index += 1
                        value = argv[index] if index < len(argv) else ""
                    pairs.append((flag, value))
                    break
                pairs.append((flag, ""))
                position += 1
            index += 1
        if destination is None and index < len(argv):
            destination = argv[index]
            index += 1
            if not terminated:
                continue
        break
    return pairs, ([destination] if destination is not None else []) + argv[index:]


def command_start(argv, positionals):
    """Where the remote command begins in `argv` (its length when there is none)."""
    return len(argv) - max(0, len(positionals) - 1)


def without_control_socket(args, end):
    """The argv less the `-S none` among its options (before `end`, where the remote command
    begins; as `-S none` or `-Snone`; combined with other flags it is left, and the pin check
    refuses it)."""
    kept, index = [], 0
    while index < len(args):
        if index >= end or args[index] == "--":
            kept.extend(args[index:])
            break
        if args[index] == "-S" and index + 1 < len(args) and args[index + 1] == "none":
            index += 2
            continue
        if args[index] == "-Snone":
            index += 1
            continue
        kept.append(args[index])
        index += 1
    return kept


def effective(real_ssh, args):
    """OpenSSH's own reading of an argv (`ssh -G`; the user's and the system's config left out)."""
    result = subprocess.run([real_ssh, "-G", "-F", "/dev/null", *args], capture_output=True, text=True, check=False)
    config = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), []).append(value)
    return config, result


def first(config, key):
    values = config.get(key, [])
    return values[0] if values else ""


def record(settings, entry):
    """Tells the harness (its teller, outside the jail: what is told cannot be undone from inside);
    outside an apply, where no teller listens, appends to the records file, never through a link."""
    line = (json.dumps(entry) + "\n").encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as teller:
            teller.settimeout(10)
            teller.connect(settings["tell"])
            teller.sendall(line)
            if teller.recv(3) == b"ok\n":
                return
    except OSError:
        pass
    fd = os.open(settings["records"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def reachable(settings):
    """The VMs an apply may reach, in words: `the test VM (ip:22 as boma)`, or each of several."""
    addresses = ", ".join(f"{target['ip']}:{settings['port']}" for target in settings["targets"])
    return f"the test VM{'s' if len(settings['targets']) > 1 else ''} ({addresses} as {settings['user']})"


def refuse(settings, what, detail):
    message = f"boma-it confinement: refused {what}: {detail}; only {reachable(settings)} {'are' if len(settings['targets']) > 1 else 'is'} reachable from a boma-it apply"
    record(settings, {"kind": "refusal", "what": what, "detail": detail})
    sys.stderr.write(message + "\n")
    sys.exit(255)


def setting_source(pairs, keyword, flag):
    """The argv option that set `keyword` (for messages): `-o Port=2222` or `-p 2222`."""
    for option, value in pairs:
        if option == flag:
            return f"-{flag} {value}"
        if option == "o" and value.lower().replace(" ", "=").split("=", 1)[0] == keyword:
            return f"-o {value}"
    return None


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        settings = json.load(handle)
    args = sys.argv[2:]
    if args == ["--refuse-transfer"]:
        # What Ansible runs for sftp and scp: files go over this ssh (ssh_transfer_method piped).
        refuse(settings, "a file transfer by sftp or scp", "boma-it sends files over its confined ssh (ssh_transfer_method piped)")
    real_ssh = settings["realSsh"]
    pairs, positionals = options_of(args)
    for flag, value in pairs:
        if flag in REFUSED_FLAGS:
            refuse(settings, f"ssh with {REFUSED_FLAGS[flag]}", f"Ansible's ssh arguments hold -{flag}")
        if flag == "S" and value != "none":
            refuse(settings, "ssh with a control socket of its own (-S)", f"Ansible's ssh arguments hold -S {value}")
    # `-S none` (synchronize's rsync asks for no shared connection) would override the forced
    # ControlPath (ssh applies -S as it reads it): it is dropped, the run's connection is the way.
    args = without_control_socket(args, command_start(args, positionals))
    for flag, value in pairs:
        if flag == "O":
            if value in ANSWERED_CONTROL:
                sys.stderr.write(ANSWERED_CONTROL[value] + "\n")
                sys.exit(0)
            refuse(settings, f"the control command -O {value}", "only commands on the VM pass the run's connection")
    if not positionals:
        # No destination, no connection: Ansible probing what ssh supports (`ssh -o ControlPersist`).
        os.execv(real_ssh, [real_ssh, "-F", "/dev/null", *args])

    # What the argv asks for on its own: a different destination is refused, not redirected.
    asked, probe = effective(real_ssh, args)
    if probe.returncode != 0:
        refuse(settings, "ssh arguments OpenSSH cannot read", (probe.stderr.strip().splitlines() or ["ssh -G failed"])[-1][:300])
    host, port, user = first(asked, "hostname"), first(asked, "port"), first(asked, "user")
    # The VM asked for, by its address: its own key, pin and gate, never another VM's.
    target = next((candidate for candidate in settings["targets"] if candidate["ip"] == host), None)
    wrong = []
    if target is None:
        wrong.append(("hostname", "", f"host {host}"))
    if port != str(settings["port"]):
        wrong.append(("port", "p", f"port {port}"))
    if user != settings["user"]:
        wrong.append(("user", "l", f"user {user}"))
    if wrong:
        sources = [setting_source(pairs, keyword, flag) for keyword, flag, _ in wrong]
        named = "; set by " + ", ".join(source for source in sources if source) if any(sources) else "; the destination Ansible was given"
        refuse(settings, f"ssh to {host}:{port} as {user}", ", ".join(text for _, _, text in wrong) + named + " (a connection variable, ssh_args in ansible.cfg, or ANSIBLE_SSH_ARGS)")
    notes = []
    for keyword in ("proxyjump", "proxycommand"):
        value = first(asked, keyword)
        if value and value != "none":
            notes.append(f"{keyword} {value} (ignored: the VM is reached directly)")
    if first(asked, "stricthostkeychecking") in ("false", "no", "off", "accept-new"):
        notes.append("StrictHostKeyChecking off (ignored: the VM's host key is pinned)")
    for note in notes:
        record(settings, {"kind": "note", "note": note})

    # The forced options come first (OpenSSH keeps the first value of each), -F /dev/null among them.
    final = [*target["forcedOptions"], *args]
    forced, check = effective(real_ssh, final)
    expected = {
        "hostname": target["ip"],
        "port": str(settings["port"]),
        "user": settings["user"],
        "stricthostkeychecking": "true",
        "identitiesonly": "yes",
        "hostkeyalias": target["alias"],
        "controlmaster": "false",
        "controlpath": target["controlPath"],
    }
    for keyword, value in expected.items():
        if check.returncode != 0 or first(forced, keyword) != value:
            refuse(settings, "an ssh call whose settings could not be pinned", f"{keyword} is {first(forced, keyword)!r}, expected {value!r}")
    others = [value for value in forced.get("identityfile", []) if value != target["keyFile"]]
    others += forced.get("certificatefile", [])
    if others:
        refuse(settings, f"ssh with the identity {others[0]}", "only the run's own key is offered to the VM (an IdentityFile or -i in Ansible's ssh arguments)")

    # Where it went, for the apply's record (confine/records.jsonl, kind "connection"): the options and the
    # destination, never the remote command (a task's command line may hold a secret).
    command_words = len(positionals) - 1
    record(settings, {"kind": "connection", "argv": final[: len(final) - command_words] if command_words > 0 else final})
    environment = {key: value for key, value in os.environ.items() if key not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    os.execve(real_ssh, [real_ssh, *final], environment)


if __name__ == "__main__":
    main()
