"""boma-it's callback: does nothing. The only one enabled in a jailed Ansible.

An empty `callbacks_enabled` cannot be said through the environment (Ansible reads an empty
list as one empty name), and the repo's ansible.cfg or the user's environment must not enable
theirs (a junit file in HOME, a syslog packet, ARA): this one is named instead, from a folder of
callback plugins that holds nothing else (apply.ts). The output the harness reads is Ansible's
default stdout callback.
"""
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: boma_it
    type: aggregate
    short_description: nothing (the one callback boma-it enables)
    description: Enabled in place of every other callback; it does nothing.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "boma_it"
    CALLBACK_NEEDS_ENABLED = True
