#!/usr/bin/env python3
"""A recording fake `pulumi` CLI for unit tests of the Automation API wrapper.

It is NOT Pulumi: it never runs a program and never creates a resource. It answers the calls the
Automation API makes with the shapes the real CLI prints, keeps stack state in the real file
backend layout ($PULUMI_BACKEND_URL/.pulumi/stacks/<project>/<stack>.json, tags next to it, locks
under .pulumi/locks/organization/<project>/<stack>/), fails the way the real CLI fails (locked
stack, missing stack, pending operations, resources left at `stack rm`), and appends every call
as one JSON line {argv, cwd, env} to $FAKE_LOG.

Knobs: FAKE_PULUMI_VERSION (default 3.270.0), FAKE_PULUMI_FAIL_UP=1 (up fails after "creating"
the resources named in FAKE_PULUMI_UP_CREATES, space separated).
"""
import datetime
import glob
import json
import os
import sys

PROJECT = "boma-it"
LOGGED_ENV = [
    "PULUMI_BACKEND_URL",
    "PULUMI_CONFIG_PASSPHRASE_FILE",
    "PULUMI_HOME",
    "PULUMI_SKIP_UPDATE_CHECK",
    "PULUMI_AUTOMATION_API",
    "PULUMI_CONFIG_PASSPHRASE",
]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(255)


def option(args, name):
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def backend_dir():
    url = os.environ.get("PULUMI_BACKEND_URL", "")
    if not url.startswith("file://"):
        fail(f"the fake only knows file backends, got {url!r}")
    return url[len("file://"):].split("?")[0]


def stack_file(stack):
    return os.path.join(backend_dir(), ".pulumi", "stacks", PROJECT, f"{stack}.json")


def tags_file(stack):
    return os.path.join(backend_dir(), ".pulumi", "stacks", PROJECT, f"{stack}.pulumi-tags")


def lock_files(stack):
    return sorted(glob.glob(os.path.join(backend_dir(), ".pulumi", "locks", "organization", PROJECT, stack, "*.json")))


def load(stack):
    path = stack_file(stack)
    if not os.path.exists(path):
        fail(f"no stack named '{stack}' found")
    with open(path) as handle:
        return json.load(handle)


def save(stack, checkpoint):
    path = stack_file(stack)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(checkpoint, handle)


def refuse_if_locked(stack):
    for path in lock_files(stack):
        with open(path) as handle:
            lock = json.load(handle)
        print(
            "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
            "or delete the lock file with `pulumi cancel`.\n"
            f"  file://{path}: created by {lock['username']}@{lock['hostname']} (pid {lock['pid']}) at {lock['timestamp']}",
            file=sys.stderr,
        )
        sys.exit(255)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    args = [arg for arg in sys.argv[1:] if arg != "--non-interactive"]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps({"argv": ["pulumi", *sys.argv[1:]], "cwd": os.getcwd(), "env": {k: os.environ[k] for k in LOGGED_ENV if k in os.environ}}) + "\n")
    stack = option(args, "--stack")
    words = [arg for arg in args if not arg.startswith("-")]

    if words[:1] == ["version"]:
        print("v" + os.environ.get("FAKE_PULUMI_VERSION", "3.270.0"))
    elif words[:2] == ["plugin", "ls"]:
        plugins = []
        for path in sorted(glob.glob(os.path.join(os.environ.get("PULUMI_HOME", "/nonexistent"), "plugins", "*-v*"))):
            kind, rest = os.path.basename(path).split("-", 1)
            name, version = rest.rsplit("-v", 1)
            plugins.append({"name": name, "kind": kind, "version": version, "path": path, "size": 1})
        print(json.dumps(plugins))
    elif words[:2] == ["stack", "init"]:
        name = words[2]
        if os.path.exists(stack_file(name)):
            fail(f"stack '{name}' already exists")
        save(name, {"version": 3, "checkpoint": {"stack": name, "latest": {"resources": []}}})
        print(f"Created stack '{name}'")
    elif words[:2] == ["stack", "select"]:
        load(stack)
    elif words[:3] == ["stack", "tag", "set"]:
        load(stack)
        tags = json.load(open(tags_file(stack))) if os.path.exists(tags_file(stack)) else {}
        tags[words[3]] = words[4]
        json.dump(tags, open(tags_file(stack), "w"))
    elif words[:3] == ["stack", "tag", "ls"]:
        load(stack)
        tags = json.load(open(tags_file(stack))) if os.path.exists(tags_file(stack)) else {}
        print(json.dumps({"pulumi:project": PROJECT, **tags}))
    elif words[:2] == ["stack", "ls"]:
        found = []
        for path in sorted(glob.glob(os.path.join(backend_dir(), ".pulumi", "stacks", PROJECT, "*.json"))):
            name = os.path.basename(path)[: -len(".json")]
            resources = load(name)["checkpoint"]["latest"]["resources"]
            found.append({"name": name, "current": False, "updateInProgress": bool(lock_files(name)), "resourceCount": len(resources)})
        print(json.dumps(found))
    elif words[:1] == ["up"]:
        checkpoint = load(stack)
        refuse_if_locked(stack)
        created = os.environ.get("FAKE_PULUMI_UP_CREATES", "").split()
        print(f"Updating ({stack}):")
        for name in created:
            print(f" +  command:local:Command {name} created")
        checkpoint["checkpoint"]["latest"]["resources"] = [
            {"urn": f"urn:pulumi:{stack}::{PROJECT}::command:local:Command::{name}", "type": "command:local:Command"} for name in created
        ]
        save(stack, checkpoint)
        if os.environ.get("FAKE_PULUMI_FAIL_UP"):
            fail("update failed")
        print(f"Resources:\n    + {len(created)} created")
    elif words[:2] == ["stack", "output"]:
        load(stack)
        print("{}")
    elif words[:2] == ["stack", "history"]:
        load(stack)
        print(json.dumps([{"version": 1, "kind": "update", "startTime": now(), "endTime": now(), "result": "succeeded", "message": ""}]))
    elif words[:2] == ["stack", "export"]:
        checkpoint = load(stack)
        print(json.dumps({"version": 3, "deployment": checkpoint["checkpoint"]["latest"]}))
    elif words[:2] == ["stack", "import"]:
        checkpoint = load(stack)
        refuse_if_locked(stack)
        with open(option(args, "--file")) as handle:
            checkpoint["checkpoint"]["latest"] = json.load(handle)["deployment"]
        save(stack, checkpoint)
    elif words[:1] == ["cancel"]:
        load(stack)
        locks = lock_files(stack)
        if not locks:
            fail(f"no update for stack '{stack}' is in progress")
        for path in locks:
            os.remove(path)
        print(f"The currently running update for '{stack}' has been canceled!")
    elif words[:1] == ["destroy"]:
        checkpoint = load(stack)
        refuse_if_locked(stack)
        latest = checkpoint["checkpoint"]["latest"]
        pending = latest.get("pending_operations") or []
        if pending:
            fail(
                f"the current deployment has {len(pending)} resource(s) with pending operations:\n"
                + "".join(f"  * {op['resource']['urn']}, interrupted while {op['type']}\n" for op in pending)
            )
        print(f"Destroying ({stack}):")
        for resource in latest["resources"]:
            print(f" -  {resource['type']} {resource['urn'].split('::')[-1]} deleted")
        latest["resources"] = []
        save(stack, checkpoint)
    elif words[:2] == ["stack", "rm"]:
        name = words[2]
        checkpoint = load(name)
        if checkpoint["checkpoint"]["latest"]["resources"]:
            fail(f"'{name}' still has resources; removal rejected")
        os.remove(stack_file(name))
        for path in [tags_file(name), os.path.join(os.getcwd(), f"Pulumi.{name}.yaml")]:
            if os.path.exists(path):
                os.remove(path)
        print(f"Stack '{name}' has been removed!")
    else:
        fail(f"the fake pulumi does not know `{' '.join(args)}`")


main()
