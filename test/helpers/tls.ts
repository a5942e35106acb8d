/** A certificate authority of a test's own, made with openssl (no network, no system trust). */
import { execFileSync } from "node:child_process";
import { join } from "node:path";

/** A CA of its own and a leaf for app.test.example it signed, valid one day. */
export function makeCa(dir: string): { caPem: string; key: string; cert: string } {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=Boma Test Local Authority",
  ]);
  run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=app.test.example"]);
  execFileSync("sh", ["-c", "printf 'subjectAltName=DNS:app.test.example\\n' > leaf.ext"], { cwd: dir });
  run(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.crt", "-days", "1", "-extfile", "leaf.ext"]);
  const read = (name: string) => execFileSync("cat", [join(dir, name)]).toString();
  return { caPem: read("ca.crt"), key: read("leaf.key"), cert: read("leaf.crt") };
}
