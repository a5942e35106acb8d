"""boma-it's callback: the one enabled in a jailed Ansible; records each task's result.

An empty `callbacks_enabled` cannot be said through the environment (Ansible reads an empty
list as one empty name), and the repo's ansible.cfg or the user's environment must not enable
theirs (a junit file in HOME, a syslog packet, ARA): this one is named instead, from a folder of
callback plugins that holds nothing else (apply.ts). The output a person reads is Ansible's
default stdout callback.

With BOMA_IT_TASK_RECORDS set (a file in a private folder the harness made), each task's result
on each host is appended to it as one JSON line: what a verify playbook's asserts said and which
tasks a second apply changed are read from there, not parsed from the screen. Ansible hands
callbacks results already censored for `no_log`; the harness redacts the run's secrets on reading.
"""
import json
import os

from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: boma_it
    type: aggregate
    short_description: records each task's result for boma-it (the one callback it enables)
    description: Enabled in place of every other callback; writes nothing unless BOMA_IT_TASK_RECORDS names a file.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "boma_it"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._records = os.environ.get("BOMA_IT_TASK_RECORDS") or None

    def _record(self, result, status, ignored=False):
        if self._records is None:
            return
        task = result._task
        outcome = result._result if isinstance(result._result, dict) else {}
        entry = {
            "task": task.get_name(),
            "action": task.action,
            "handler": isinstance(task, Handler),
            "host": result._host.get_name(),
            "status": status,
            "ignored": bool(ignored),
            # Whole: the harness redacts, then cuts (a secret cut here would escape redaction).
            "msg": _text(outcome.get("msg", "")),
        }
        if "assertion" in outcome:
            entry["assertion"] = _text(outcome["assertion"])
        with open(self._records, "a", encoding="utf-8") as records:
            records.write(json.dumps(entry) + "\n")

    def v2_runner_on_ok(self, result):
        changed = isinstance(result._result, dict) and bool(result._result.get("changed"))
        self._record(result, "changed" if changed else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed", ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")


def _text(value):
    """A message as one string: Ansible's may be a list or a mapping."""
    return value if isinstance(value, str) else json.dumps(value, default=str)
