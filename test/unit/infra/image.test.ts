import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { Runner } from "../../../infra/runner.ts";
import { RefusedError } from "../../../orchestrator/errors.ts";
import { ensureGoldenImage } from "../../../orchestrator/host/golden.ts";
import { Log } from "../../../orchestrator/log.ts";
import { ChecksumMismatchError, imagePath, listImages, parseDpkgList, pullGenericCloud } from "../../../infra/image/images.ts";
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
const badSums = `${"ab".repeat(64)}  debian-13-genericcloud-amd64.qcow2\n`;

/** Runs `body` with an empty cache dir and a mirror serving `sums`; both go away afterwards. */
async function withMirror(sums: string, body: (cacheDir: string, url: string) => Promise<void>): Promise<void> {
  const tree = await tempTree();
  const { server, url } = await mirror(sums);
  try {
    await body(tree.dir, url);
  } finally {
    server.close();
    await tree.remove();
  }
}

describe("image pull", () => {
  it("installs a verified image read-only with a sidecar", async () => {
    await withMirror(`${"0".repeat(128)}  other.qcow2\n${goodSum}  debian-13-genericcloud-amd64.qcow2\n`, async (cacheDir, url) => {
      const info = await pullGenericCloud(cacheDir, url);
      assert.equal(info.present, true);
      assert.equal(info.sha512, goodSum);
      assert.equal((await stat(imagePath(cacheDir, "debian-13-genericcloud"))).mode & 0o777, 0o444);
      const listed = await listImages(cacheDir);
      assert.deepEqual(
        listed.map((image) => [image.name, image.present]),
        [
          ["debian-13-genericcloud", true],
          ["debian-13-local", false],
        ],
      );
    });
  });

  it("refuses a checksum mismatch and keeps no file", async () => {
    await withMirror(badSums, async (cacheDir, url) => {
      await assert.rejects(pullGenericCloud(cacheDir, url), (error: unknown) => {
        assert.ok(error instanceof ChecksumMismatchError);
        assert.match(error.message, /checksum mismatch .*SHA512SUMS says abababab.*the file was not kept/);
        return true;
      });
      assert.deepEqual(await readdir(cacheDir), []);
    });
  });

  it("exits 3 from the CLI on a mismatch", async () => {
    await withMirror(badSums, async (cacheDir, url) => {
      const result = await runCli(["image", "pull"], {
        BOMA_IT_IMAGE_DIR: cacheDir,
        BOMA_IT_DEBIAN_CLOUD_URL: url,
        BOMA_IT_RUN_LOCK: join(cacheDir, "..", `run-${process.pid}.lock`),
      });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /checksum mismatch/);
    });
  });
});

describe("image pull without a way to the server", () => {
  it("is refused (exit 3) with how to make an image offline, never a trace", async () => {
    const tree = await tempTree();
    try {
      // A name that never resolves (RFC 6761's .invalid): the download cannot start.
      const result = await runCli(["image", "pull"], {
        BOMA_IT_IMAGE_DIR: join(tree.dir, "images"),
        BOMA_IT_DEBIAN_CLOUD_URL: "http://cloud.debian.invalid/images/trixie/latest/",
        BOMA_IT_RUN_LOCK: join(tree.dir, "run.lock"),
      });
      assert.equal(result.code, 3, result.stderr);
      assert.match(
        result.stderr,
        /debian-13-genericcloud is not in .* and cannot be downloaded from http:\/\/cloud\.debian\.invalid\/.*: (ENOTFOUND|EAI_AGAIN)/,
      );
      assert.match(result.stderr, /fix: without internet, make debian-13-local offline from Debian packages \(`sudo npm run boma-it -- image build`/);
      assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
    } finally {
      await tree.remove();
    }
  });
});

describe("image build of a cached image", () => {
  it("keeps one built from the current recipe, builds again one from an older recipe", async () => {
    const { localImageRecipe } = await import("../../../infra/image/images.ts");
    const { writeFile } = await import("node:fs/promises");
    const { writeFake } = await import("../../helpers/fakes.ts");
    const tree = await tempTree();
    try {
      const image = join(tree.dir, "debian-13-local.qcow2");
      await writeFile(image, IMAGE);
      const sidecar = (recipe: string) => writeFile(`${image}.json`, JSON.stringify({ source: "build (mmdebstrap trixie from x)", recipe }));
      // A build that would start fails at once here: mmdebstrap is a fake that refuses; libvirt
      // (a fake) has no test VM whose overlay the image backs.
      await writeFake(join(tree.dir, "bin"), "mmdebstrap", "echo 'fake mmdebstrap: not building in a unit test' >&2; exit 1");
      await writeFake(join(tree.dir, "bin"), "virsh", "exit 0");
      const env = {
        BOMA_IT_IMAGE_DIR: tree.dir,
        PATH: `${join(tree.dir, "bin")}:${process.env.PATH}`,
        FAKE_LOG: join(tree.dir, "log"),
        BOMA_IT_RUN_LOCK: join(tree.dir, "run.lock"),
      };

      await sidecar(await localImageRecipe());
      const current = await runCli(["image", "build"], env);
      assert.equal(current.code, 0, current.stderr);
      assert.match(current.stdout, /debian-13-local is already in/);

      await sidecar("0123456789abcdef");
      const stale = await runCli(["image", "build"], env);
      assert.match(
        stale.stderr,
        new RegExp(`built from another recipe \\(0123456789abcdef, this boma-it's is ${await localImageRecipe()}\\): building it again`),
      );
      assert.match(stale.stderr, /fake mmdebstrap: not building/, "it did start building");
    } finally {
      await tree.remove();
    }
  });
});

describe("a built image's manifest", () => {
  it("reads dpkg-query's list as name → version, sorted", () => {
    assert.deepEqual(Object.entries(parseDpkgList("zstd\t1.5.6+dfsg-2\nadduser\t3.152\n\nbroken-line\n")), [
      ["adduser", "3.152"],
      ["zstd", "1.5.6+dfsg-2"],
    ]);
  });

  it("is shown by image ls: a count in text, every package with --json", async () => {
    const tree = await tempTree();
    try {
      const image = imagePath(tree.dir, "debian-13-local");
      await writeFile(image, IMAGE);
      const manifest = {
        recipe: "0123456789abcdef",
        suite: "trixie",
        requested: ["openssh-server"],
        packages: { "openssh-server": "1:10.0p1-7", "linux-image-6.12.57+deb13-cloud-amd64": "6.12.57-1" },
      };
      await writeFile(`${image}.json`, JSON.stringify({ source: "build (mmdebstrap trixie from x)", recipe: manifest.recipe, manifest }));
      const text = await runCli(["image", "ls"], { BOMA_IT_IMAGE_DIR: tree.dir });
      assert.match(text.stdout, /debian-13-local .* 2 packages, recipe 0123456789abcdef \(--json lists them\)/);
      const json = JSON.parse(
        (await runCli(["image", "ls", "--json"], { BOMA_IT_IMAGE_DIR: tree.dir, BOMA_IT_STATE_CACHE: join(tree.dir, "states") })).stdout,
      ) as {
        images: { name: string; manifest?: typeof manifest }[];
        states: { dir: string; saved: unknown[] };
      };
      assert.deepEqual(json.images.find((entry) => entry.name === "debian-13-local")?.manifest, manifest);
      assert.deepEqual(json.states.saved, [], "no saved first boot in an empty cache");
    } finally {
      await tree.remove();
    }
  });
});

describe("a run's golden image on first use", () => {
  const context = () => ({
    runner: new Runner({ env: process.env }),
    log: new Log({ stream: new PassThrough(), enabled: false }),
    env: {},
    signal: new AbortController().signal,
  });

  it("pulls a missing genericcloud image once, saying so, and then uses the cached one", async () => {
    await withMirror(`${goodSum}  debian-13-genericcloud-amd64.qcow2\n`, async (cacheDir, url) => {
      const transcript: string[] = [];
      const log = new Log({ stream: new PassThrough(), enabled: false });
      log.transcribe((line) => transcript.push(line));
      const obtain = { ...context(), log, env: { BOMA_IT_DEBIAN_CLOUD_URL: url } };
      await ensureGoldenImage(cacheDir, "debian-13-genericcloud", true, obtain);
      assert.equal((await stat(imagePath(cacheDir, "debian-13-genericcloud"))).size, IMAGE.length);
      assert.ok(
        transcript.some((line) =>
          /golden image debian-13-genericcloud is not in .*: downloading Debian's genericcloud image, once \(--no-image-fetch refuses instead\)/.test(line),
        ),
        transcript.join("\n"),
      );
      assert.ok(
        transcript.some((line) => /^✓ pull debian-13-genericcloud/.test(line)),
        transcript.join("\n"),
      );
      const before = transcript.length;
      await ensureGoldenImage(cacheDir, "debian-13-genericcloud", true, obtain);
      assert.equal(transcript.length, before, "a cached image is used as it is");
    });
  });

  it("refuses a missing image with --no-image-fetch, naming the command that makes it", async () => {
    const tree = await tempTree();
    try {
      await assert.rejects(ensureGoldenImage(tree.dir, "debian-13-local", false, context()), (error: unknown) => {
        assert.ok(error instanceof RefusedError);
        assert.match(error.message, /golden image debian-13-local is not in .* \(--no-image-fetch\)/);
        assert.match(error.message, /sudo npm run boma-it -- image build, or run without --no-image-fetch/);
        return true;
      });
      assert.deepEqual(await readdir(tree.dir), []);
    } finally {
      await tree.remove();
    }
  });

  it("never boots a built image from another recipe: without a way to make it again, it is refused", async () => {
    const tree = await tempTree();
    try {
      const image = imagePath(tree.dir, "debian-13-local");
      await writeFile(image, IMAGE);
      await writeFile(`${image}.json`, JSON.stringify({ source: "build (mmdebstrap trixie from x)", recipe: "0123456789abcdef" }));
      await assert.rejects(ensureGoldenImage(tree.dir, "debian-13-local", false, context()), (error: unknown) => {
        assert.ok(error instanceof RefusedError);
        assert.match(
          error.message,
          /was built from another recipe \(0123456789abcdef, this boma-it's is [0-9a-f]{16}\): a run would not test with the VM this boma-it makes/,
        );
        assert.match(error.message, /fix: sudo npm run boma-it -- image build/);
        return true;
      });
      // One placed by hand (no build sidecar) is the user's: used as it is.
      await writeFile(`${image}.json`, JSON.stringify({ source: "copied by hand" }));
      await ensureGoldenImage(tree.dir, "debian-13-local", false, context());
    } finally {
      await tree.remove();
    }
  });

  it("image build refuses while test VMs exist: their overlays are backed by the image", async () => {
    const { writeFake } = await import("../../helpers/fakes.ts");
    const tree = await tempTree();
    try {
      const image = imagePath(tree.dir, "debian-13-local");
      await writeFile(image, IMAGE);
      await writeFile(`${image}.json`, JSON.stringify({ source: "build (mmdebstrap trixie from x)", recipe: "0123456789abcdef" }));
      await writeFake(join(tree.dir, "bin"), "virsh", 'case "$*" in *list*) echo boma-it-askari-20261201-120000 ;; esac; exit 0');
      const result = await runCli(["image", "build"], {
        BOMA_IT_IMAGE_DIR: tree.dir,
        PATH: `${join(tree.dir, "bin")}:${process.env.PATH}`,
        FAKE_LOG: join(tree.dir, "log"),
        BOMA_IT_RUN_LOCK: join(tree.dir, "run.lock"),
      });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /image build would replace the golden image under the overlays of boma-it-askari-20261201-120000/);
      assert.equal((await readFile(image)).toString("latin1"), IMAGE.toString("latin1"), "the image is untouched");
    } finally {
      await tree.remove();
    }
  });

  it("never makes a file: image, the user's own", async () => {
    const tree = await tempTree();
    try {
      await ensureGoldenImage(tree.dir, `file:${tree.dir}/mine.qcow2`, true, context());
      assert.deepEqual(await readdir(tree.dir), []);
    } finally {
      await tree.remove();
    }
  });
});
