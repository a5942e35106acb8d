"""The secret values of vaulted files, read with Ansible's own loader and vault settings.

Called by vault.ts with the interpreter Ansible itself runs on, in the infrastructure repo (so
its ansible.cfg's vault settings apply). Two ways:

- `--passwords`, outside the jail, with the user's environment (ANSIBLE_VAULT_PASSWORD_FILE,
  ANSIBLE_VAULT_IDENTITY_LIST): the vault passwords as the user's Ansible gets them (a file, or
  the user's password script, run once here), printed as {"passwords": [{"id", "password"}]}, for
  every jailed Ansible of the run to be given (jail.ts: no script of the user's runs in a jail);
- files to read, in the jail, with the passwords given: prints {"files": [{"file", "whole": bool,
  "values": [...]} | {"file", "error"}], "error"?}: for a file that is vaulted as a whole every
  leaf value, otherwise the plaintext of each inline `!vault` string.

An error never carries a file's content: Ansible's messages quote the offending lines.
"""
import json
import sys


def leaves(value):
    """Every scalar value of a loaded structure, as text."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    if isinstance(value, bool):
        return []
    return [str(value)]


def vaulted(value, encrypted_type):
    """The decrypted text of every inline vault string in a loaded structure."""
    if isinstance(value, encrypted_type):
        return [str(value)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in vaulted(item, encrypted_type)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in vaulted(item, encrypted_type)]
    return []


def safe_error(error):
    """What went wrong, without the quoted content Ansible's messages carry."""
    message = str(getattr(error, "message", None) or error).strip().split("\n")[0]
    return f"{type(error).__name__}: {message}"[:300]


def main(paths):
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import is_encrypted_file
    from ansible.parsing.yaml.objects import AnsibleVaultEncryptedUnicode

    loader = DataLoader()
    try:
        secrets = CLI.setup_vault_secrets(
            loader,
            vault_ids=list(C.DEFAULT_VAULT_IDENTITY_LIST),
            ask_vault_pass=False,
            auto_prompt=False,
        )
    except Exception as error:  # noqa: BLE001 - a password file that cannot be read or run
        json.dump({"error": safe_error(error), "files": []}, sys.stdout)
        return
    if paths == ["--passwords"]:
        passwords = []
        for vault_id, secret in secrets:
            password = secret.bytes.decode("utf-8", "surrogateescape") if secret.bytes else ""
            if password and not any(known["id"] == vault_id for known in passwords):
                passwords.append({"id": vault_id, "password": password})
        json.dump({"passwords": passwords}, sys.stdout)
        return
    loader.set_vault_secrets(secrets)
    results = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                whole = is_encrypted_file(handle)
            data = loader.load_from_file(path, cache=False)
            values = leaves(data) if whole else vaulted(data, AnsibleVaultEncryptedUnicode)
            results.append({"file": path, "whole": whole, "values": values})
        except Exception as error:  # noqa: BLE001 - every failure is reported per file
            results.append({"file": path, "error": safe_error(error)})
    json.dump({"files": results}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
