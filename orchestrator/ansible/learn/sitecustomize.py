"""Tells the harness every vault plaintext Ansible decrypts, as it decrypts it (boma-it).

A jailed ansible-playbook gets this folder on PYTHONPATH and BOMA_IT_REPORT_SECRETS=1 (apply.ts).
Wherever a play reads vaulted content (vars_files or include_vars outside the repo, a role from
a roles_path elsewhere, a `file` lookup of a vaulted file), it passes through Ansible's VaultLib;
the values are written to stdout as one private line (a marker, then a JSON list) before Ansible
can print them anywhere. The harness's runner takes those lines out of the output and redacts the
values from every later line (infra/runner.ts, `privateLines`). The leaves of a vaulted YAML file
are told one by one, an inline `!vault` string as it is. Nothing else is changed.
"""
import importlib.abc
import importlib.util
import json
import os
import sys

MARK = "\x1fboma-it-learnt "
MIN_LENGTH = 6


def leaves(value):
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [str(value)]


def tell(plaintext):
    text = plaintext.decode("utf-8", "surrogateescape") if isinstance(plaintext, bytes) else str(plaintext)
    try:
        import yaml

        loaded = yaml.safe_load(text)
        values = leaves(loaded) if isinstance(loaded, (dict, list)) else [text]
    except Exception:  # noqa: BLE001 - not YAML (a key, a certificate): the whole text is the secret
        values = [text]
    values = [value for value in values if len(value) >= MIN_LENGTH]
    if values:
        os.write(1, (MARK + json.dumps(values) + "\n").encode("utf-8", "surrogateescape"))


def patch(module):
    original = module.VaultLib.decrypt_and_get_vault_id

    def decrypt_and_get_vault_id(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            tell(result[0])
        except Exception:  # noqa: BLE001 - telling must never break a decryption
            pass
        return result

    module.VaultLib.decrypt_and_get_vault_id = decrypt_and_get_vault_id


class PatchVaultOnImport(importlib.abc.MetaPathFinder):
    """Patches ansible.parsing.vault as it is imported (Ansible is not imported any earlier)."""

    def find_spec(self, name, path, target=None):
        if name != "ansible.parsing.vault":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("BOMA_IT_REPORT_SECRETS") == "1":
    sys.meta_path.insert(0, PatchVaultOnImport())
