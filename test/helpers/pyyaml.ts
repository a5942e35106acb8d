/** Reading YAML the way cloud-init and Ansible do: PyYAML's safe_load (YAML 1.1). */
import { execFileSync } from "node:child_process";

/** What PyYAML's safe_load makes of `text`, through JSON (dates and other types as strings). */
export function pyyamlLoad(text: string): unknown {
  const script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin), default=str))";
  return JSON.parse(execFileSync("python3", ["-c", script], { input: text, encoding: "utf8" }));
}
