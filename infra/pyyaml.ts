/**
 * YAML as the Python side reads it. cloud-init and Ansible parse YAML 1.1 (PyYAML); the `yaml`
 * package speaks 1.2 unless told. In 1.1, `52:54:00:24:49:56` (a MAC of digits only) is a base-60
 * integer, `yes` and `on` are booleans, `010` is octal: plain strings in 1.2. Written with the 1.1
 * schema, such strings are quoted and stay strings; read with it, a file gives what Ansible sees.
 *
 * Ansible's own tags survive the trip: a value Ansible lists as `{__ansible_vault: ciphertext}` or
 * `{__ansible_unsafe: text}` (what `ansible-inventory --list` prints for `!vault` and `!unsafe`)
 * is written back as that tag, so a vaulted var stays vaulted and an unsafe one is not templated.
 */
import { Document, isMap, isScalar, Scalar, visit } from "yaml";

/** Parse and stringify options of the `yaml` package for YAML that Python reads or wrote. */
export const PYTHON_YAML = { version: "1.1" } as const;

/** The keys of Ansible's JSON marks and the YAML tags they stand for. */
const ANSIBLE_MARKS: Readonly<Record<string, string>> = { __ansible_vault: "!vault", __ansible_unsafe: "!unsafe" };

/** YAML text that PyYAML reads back as `value` (and Ansible with its `!vault`/`!unsafe` marks as tags). */
export function stringifyForPython(value: unknown): string {
  const document = new Document(value, PYTHON_YAML);
  visit(document, {
    Map(_key, node) {
      if (!isMap(node) || node.items.length !== 1) return undefined;
      const [pair] = node.items;
      const key = isScalar(pair!.key) ? String(pair!.key.value) : "";
      const tag = ANSIBLE_MARKS[key];
      if (!tag || !isScalar(pair!.value) || typeof pair!.value.value !== "string") return undefined;
      const scalar = new Scalar(pair!.value.value);
      scalar.tag = tag;
      // Vault ciphertext is multi-line: a literal block keeps its line breaks as Ansible wrote them.
      if (tag === "!vault") scalar.type = Scalar.BLOCK_LITERAL;
      return scalar;
    },
  });
  return document.toString();
}
