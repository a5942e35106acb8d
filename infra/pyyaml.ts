/**
 * YAML as the Python side reads it. cloud-init and Ansible parse YAML 1.1 (PyYAML); the `yaml`
 * package speaks 1.2 unless told. In 1.1, `52:54:00:24:49:56` (a MAC of digits only) is a base-60
 * integer, `yes` and `on` are booleans, `010` is octal: plain strings in 1.2. Written with the 1.1
 * schema, such strings are quoted and stay strings; read with it, a file gives what Ansible sees.
 */
import { stringify } from "yaml";

/** Parse and stringify options of the `yaml` package for YAML that Python reads or wrote. */
export const PYTHON_YAML = { version: "1.1" } as const;

/** YAML text that PyYAML reads back as `value`. */
export function stringifyForPython(value: unknown): string {
  return stringify(value, PYTHON_YAML);
}
