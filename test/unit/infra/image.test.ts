import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { readdir, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { ChecksumMismatchError, imagePath, listImages, pullGenericCloud } from "../../../infra/image/images.ts";
import { runCli } from "../../helpers/cli.ts";
import { tempTree } from "../../helpers/tmp.ts";

const IMAGE = Buffer.from("QFI\xfb pretend qcow2 bytes");

/** A loopback server standing in for Debian's cloud image mirror. */
async function mirror(sums: string): Promise<{ server: Server; url: string }> {
  const server = createServer((request, response) => {
    if (request.url?.endsWith("/SHA512SUMS")) response.end(sums);
    else if (request.url?.endsWith("/debian-13-genericcloud-amd64.qcow2")) response.end(IMAGE);
    else response.writeHead(404).end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/trixie/latest/` };
}

const goodSum = createHash("sha512").update(IMAGE).digest("hex");

describe("image pull", () => {
  it("installs a verified image read-only with a sidecar", async () => {
    const tree = await tempTree();
    const { server, url } = await mirror(`${"0".repeat(128)}  other.qcow2\n${goodSum}  debian-13-genericcloud-amd64.qcow2\n`);
    try {
      const info = await pullGenericCloud(tree.dir, url);
      assert.equal(info.present, true);
      assert.equal(info.sha512, goodSum);
      assert.equal((await stat(imagePath(tree.dir, "debian-13-genericcloud"))).mode & 0o777, 0o444);
      const listed = await listImages(tree.dir);
      assert.deepEqual(listed.map((image) => [image.name, image.present]), [["debian-13-genericcloud", true], ["debian-13-local", false]]);
    } finally {
      server.close();
      await tree.remove();
    }
  });

  it("refuses a checksum mismatch and keeps no file", async () => {
    const tree = await tempTree();
    const { server, url } = await mirror(`${"ab".repeat(64)}  debian-13-genericcloud-amd64.qcow2\n`);
    try {
      await assert.rejects(pullGenericCloud(tree.dir, url), (error: unknown) => {
        assert.ok(error instanceof ChecksumMismatchError);
        assert.match(error.message, /checksum mismatch .*SHA512SUMS says abababab.*the file was not kept/);
        return true;
      });
      assert.deepEqual(await readdir(tree.dir), []);
    } finally {
      server.close();
      await tree.remove();
    }
  });

  it("exits 3 from the CLI on a mismatch", async () => {
    const tree = await tempTree();
    const { server, url } = await mirror(`${"ab".repeat(64)}  debian-13-genericcloud-amd64.qcow2\n`);
    try {
      const result = await runCli(["image", "pull"], { BOMA_IT_IMAGE_DIR: tree.dir, BOMA_IT_DEBIAN_CLOUD_URL: url });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /checksum mismatch/);
    } finally {
      server.close();
      await tree.remove();
    }
  });
});
