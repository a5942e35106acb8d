"""Tells the harness every vault plaintext Ansible decrypts, as it decrypts it (boma-it).

A jailed ansible-playbook gets this folder on PYTHONPATH and BOMA_IT_TELL, the path of the
harness's teller (master_gate.py), in its environment (apply.ts). Wherever a play reads vaulted
content (vars_files or include_vars outside the repo, a role from a roles_path elsewhere, a
`file` lookup of a vaulted file), in the main process or a worker, it passes through Ansible's
VaultLib; the values are told to the teller, which writes them down before it answers, and only
then does the decryption return: whatever Ansible prints later, the harness knows the values
before it reads that line, and redacts them from it (apply.ts, the runner's `beforeLine`). The
leaves of a vaulted YAML file are told one by one, an inline `!vault` string as it is. Nothing
else is changed.
"""
import importlib.abc
import importlib.util
import json
import os
import socket
import sys

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
    if not values:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as teller:
        teller.settimeout(30)
        teller.connect(os.environ["BOMA_IT_TELL"])
        teller.sendall((json.dumps({"kind": "secret", "values": values}) + "\n").encode("utf-8", "surrogateescape"))
        # Written down before the plaintext goes any further.
        teller.recv(3)


def patch(module):
    original = module.VaultLib.decrypt_and_get_vault_id

    def decrypt_and_get_vault_id(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            tell(result[0])
        except OSError as error:
            # A plaintext the harness was not told of could reach its logs unredacted: no plaintext.
            raise RuntimeError(f"boma-it could not tell the harness of a decrypted vault value ({error}): refusing to decrypt") from error
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


if os.environ.get("BOMA_IT_TELL"):
    sys.meta_path.insert(0, PatchVaultOnImport())
