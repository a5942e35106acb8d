/**
 * Golden images: the cache, the download of Debian's genericcloud image with its SHA512SUMS
 * check, and the offline build of `debian-13-local` from Debian packages (mmdebstrap, no loop
 * devices). A golden file is written once, made read-only, and only ever used as the backing
 * file of a run's overlay (ADR-025 invariant 5).
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import type { Runner } from "../runner.ts";

/** Named golden images. */
export const IMAGE_NAMES = ["debian-13-genericcloud", "debian-13-local"] as const;
export type ImageName = (typeof IMAGE_NAMES)[number];

/** What is known of one image in the cache. */
export interface ImageInfo {
  name: string;
  path: string;
  present: boolean;
  sizeBytes?: number;
  createdAt?: string;
  /** How it came to be: `pull <url>` or `build (mmdebstrap trixie)`. */
  source?: string;
  sha512?: string;
  /** For a built image: the fingerprint of the recipe it was built from (see {@link localImageRecipe}). */
  recipe?: string;
  /** For a built image: what it holds. */
  manifest?: ImageManifest;
}

/** The checksum of a download did not match; the file was not kept. */
export class ChecksumMismatchError extends Error {
  constructor(file: string, expected: string, found: string) {
    super(`checksum mismatch for ${file}: SHA512SUMS says ${expected.slice(0, 16)}…, the download is ${found.slice(0, 16)}…; the file was not kept`);
    this.name = "ChecksumMismatchError";
  }
}

/** Hooks of the long image operations (they never print). */
export interface ImageHooks {
  onStep?: (step: string) => void;
  onProgress?: (detail: string) => void;
  signal?: AbortSignal;
}

/** The path of a named image in a cache dir, or the path of a `file:` image. */
export function imagePath(cacheDir: string, image: string): string {
  return image.startsWith("file:") ? image.slice("file:".length) : join(cacheDir, `${image}.qcow2`);
}

/** Lists the named images of a cache dir. */
export async function listImages(cacheDir: string): Promise<ImageInfo[]> {
  return Promise.all(IMAGE_NAMES.map((name) => imageInfo(cacheDir, name)));
}

/** What the cache knows of one image. */
export async function imageInfo(cacheDir: string, name: string): Promise<ImageInfo> {
  const path = imagePath(cacheDir, name);
  try {
    const stats = await stat(path);
    let meta: Partial<ImageInfo> = {};
    try {
      meta = JSON.parse(await readFile(`${path}.json`, "utf8")) as Partial<ImageInfo>;
    } catch {
      // no sidecar: a file placed by hand
    }
    return { ...meta, name, path, present: true, sizeBytes: stats.size, createdAt: meta.createdAt ?? stats.mtime.toISOString() };
  } catch {
    return { name, path, present: false };
  }
}

/** Where the genericcloud image and its SHA512SUMS come from (`$BOMA_IT_DEBIAN_CLOUD_URL`). */
export const DEFAULT_CLOUD_URL = "https://cloud.debian.org/images/cloud/trixie/latest/";
const CLOUD_FILE = "debian-13-genericcloud-amd64.qcow2";

/** Downloads the genericcloud image, checks it against SHA512SUMS, and installs it read-only. */
export async function pullGenericCloud(cacheDir: string, baseUrl: string, hooks: ImageHooks = {}): Promise<ImageInfo> {
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  hooks.onStep?.(`fetching ${base}SHA512SUMS`);
  const sums = await fetchText(`${base}SHA512SUMS`, hooks.signal);
  const expected = sums
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .find(([, file]) => file === CLOUD_FILE || file === `*${CLOUD_FILE}`)?.[0];
  if (!expected) throw new Error(`${base}SHA512SUMS has no line for ${CLOUD_FILE}`);

  const target = imagePath(cacheDir, "debian-13-genericcloud");
  // A private folder of its own (0700, a fresh name): nothing another account placed in the
  // cache can stand in for the download.
  const work = await mkdtemp(join(cacheDir, ".pull-"));
  const partial = join(work, CLOUD_FILE);
  hooks.onStep?.(`downloading ${base}${CLOUD_FILE}`);
  try {
    const response = await fetch(`${base}${CLOUD_FILE}`, hooks.signal ? { signal: hooks.signal } : {});
    if (!response.ok || !response.body) throw new Error(`GET ${base}${CLOUD_FILE}: HTTP ${response.status}`);
    const total = Number(response.headers.get("content-length") ?? 0);
    const hash = createHash("sha512");
    let received = 0;
    let lastReport = 0;
    const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
    body.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
      if (received - lastReport > 32 * 1024 * 1024) {
        lastReport = received;
        hooks.onProgress?.(`${mib(received)}${total ? ` of ${mib(total)}` : ""}`);
      }
    });
    await pipeline(body, createWriteStream(partial, { mode: 0o644, flags: "wx" }));
    const found = hash.digest("hex");
    if (found !== expected) throw new ChecksumMismatchError(`${base}${CLOUD_FILE}`, expected, found);
    await installReadOnly(partial, target, { source: `pull ${base}${CLOUD_FILE}`, sha512: found });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return imageInfo(cacheDir, "debian-13-genericcloud");
}

async function fetchText(url: string, signal?: AbortSignal): Promise<string> {
  const response = await fetch(url, signal ? { signal } : {});
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return response.text();
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 1024 / 1024)} MiB`;
}

/**
 * Packages baked into debian-13-local. First what Debian's genericcloud image has (the cloud
 * team's debian-cloud-images package classes a genericcloud build uses: CLOUD, GENERIC,
 * SYSTEM_BOOT with TIME_SYSTEMD, LINUX_IMAGE_CLOUD), so a role sees the host it will run on;
 * then what the example roles and the harness need offline (a VM gets no internet).
 * docs/genericcloud.md lists what still differs and why.
 */
export const LOCAL_IMAGE_PACKAGES = [
  // genericcloud
  "init",
  "systemd-sysv",
  "udev",
  "dbus",
  "libpam-systemd",
  "linux-image-cloud-amd64",
  "initramfs-tools",
  "openssh-server",
  "ssh-import-id",
  "cloud-init",
  "cloud-guest-utils",
  "netplan.io",
  "systemd-resolved",
  "libnss-myhostname",
  "polkitd",
  "systemd-timesyncd",
  "unattended-upgrades",
  "apparmor",
  "zstd",
  "sudo",
  "apt-utils",
  "iptables",
  "iputils-ping",
  "less",
  "nano",
  "netbase",
  "vim-tiny",
  "whiptail",
  "bridge-utils",
  "ifenslave",
  "vlan",
  "python3",
  "python3-apt",
  "ca-certificates",
  // the example roles and the harness, offline
  "nftables",
  "docker.io",
  "docker-cli",
  "iproute2",
  "busybox-static",
  "procps",
  "e2fsprogs",
  "netcat-openbsd",
  // the example's edge site (Caddy, its internal tier offline) and its mesh (WireGuard)
  "caddy",
  "wireguard-tools",
  // a repo's `synchronize` runs rsync on both ends
  "rsync",
] as const;

/** What `image build` baked, recorded next to the image (`image ls --json` shows it). */
export interface ImageManifest {
  /** The recipe's fingerprint (see {@link localImageRecipe}). */
  recipe: string;
  suite: string;
  /** The packages asked for (the rest came as their dependencies). */
  requested: readonly string[];
  /** Every installed package and its version. */
  packages: Record<string, string>;
}

/** Where the customize hook and GRUB config live. */
const IMAGE_ASSETS = dirname(fileURLToPath(import.meta.url));

/** Root file system size of the built image; the guest grows it to the profile's disk size. */
const ROOT_MIB = 3072;
const ESP_MIB = 64;

/**
 * The fingerprint of how debian-13-local is made (customize hook, GRUB config, packages, sizes,
 * suite). An image in the cache built from another recipe is stale: `image build` makes it again,
 * so a machine that caches the image still gets what the code now expects.
 */
export async function localImageRecipe(suite = "trixie"): Promise<string> {
  const hash = createHash("sha256");
  for (const file of ["customize.sh", "grub.cfg"]) hash.update(await readFile(join(IMAGE_ASSETS, file)));
  hash.update(JSON.stringify({ packages: LOCAL_IMAGE_PACKAGES, suite, rootMiB: ROOT_MIB, espMiB: ESP_MIB }));
  return hash.digest("hex").slice(0, 16);
}

/** Builds debian-13-local offline from Debian packages, without loop devices. Needs root. */
export async function buildLocalImage(cacheDir: string, runner: Runner, options: ImageHooks & { mirror: string; suite?: string }): Promise<ImageInfo> {
  const suite = options.suite ?? "trixie";
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  // A private folder of its own (0700, a fresh name), never one that may already exist.
  const work = await mkdtemp(join(cacheDir, ".build-"));
  const target = imagePath(cacheDir, "debian-13-local");
  const signal = options.signal ? { signal: options.signal } : {};
  const step = async (what: string, file: string, args: string[], extra: { input?: string } = {}) => {
    options.onStep?.(what);
    await runner.run(file, args, { ...signal, ...extra, onLine: (line) => options.onProgress?.(line) });
  };
  try {
    const rootDir = join(work, "root");
    await step(`mmdebstrap ${suite} with ${LOCAL_IMAGE_PACKAGES.length} packages`, "mmdebstrap", [
      "--variant=apt",
      `--include=${LOCAL_IMAGE_PACKAGES.join(",")}`,
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      `--customize-hook=sh ${join(IMAGE_ASSETS, "customize.sh")} "$1"`,
      suite,
      rootDir,
      options.mirror,
    ]);
    options.onStep?.("manifest (dpkg-query)");
    const installed = await runner.output("dpkg-query", [`--admindir=${join(rootDir, "var/lib/dpkg")}`, "-W", "-f=${Package}\t${Version}\n"]);
    const manifest: ImageManifest = { recipe: await localImageRecipe(suite), suite, requested: LOCAL_IMAGE_PACKAGES, packages: parseDpkgList(installed) };
    const rootImg = join(work, "root.img");
    await step("root file system (mkfs.ext4 -d)", "mkfs.ext4", ["-q", "-L", "boma-root", "-d", rootDir, rootImg, `${ROOT_MIB}M`]);
    await rm(rootDir, { recursive: true, force: true });

    const efi = join(work, "BOOTX64.EFI");
    await step("standalone GRUB EFI", "grub-mkstandalone", [
      "-O",
      "x86_64-efi",
      "-o",
      efi,
      "--modules=part_gpt ext2 search_label linux normal",
      `boot/grub/grub.cfg=${join(IMAGE_ASSETS, "grub.cfg")}`,
    ]);
    const esp = join(work, "esp.img");
    await step("EFI system partition (FAT)", "mkfs.vfat", ["-C", "-n", "BOMA-ESP", esp, String(ESP_MIB * 1024)]);
    await runner.run("mmd", ["-i", esp, "::/EFI", "::/EFI/BOOT"]);
    await runner.run("mcopy", ["-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"]);

    const raw = join(work, "disk.raw");
    await step("GPT disk", "truncate", ["-s", `${1 + ESP_MIB + ROOT_MIB + 1}M`, raw]);
    await runner.run("sfdisk", ["--quiet", raw], {
      input: `label: gpt\nstart=1MiB, size=${ESP_MIB}MiB, type=uefi, name=esp\nstart=${1 + ESP_MIB}MiB, size=${ROOT_MIB}MiB, type=linux, name=root\n`,
    });
    await runner.run("dd", [`if=${esp}`, `of=${raw}`, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]);
    await runner.run("dd", [`if=${rootImg}`, `of=${raw}`, "bs=1M", `seek=${1 + ESP_MIB}`, "conv=notrunc,sparse", "status=none"]);
    const qcow = join(work, "disk.qcow2");
    await step("qcow2 (qemu-img convert)", "qemu-img", ["convert", "-O", "qcow2", raw, qcow]);
    await installReadOnly(qcow, target, { source: `build (mmdebstrap ${suite} from ${options.mirror})`, recipe: manifest.recipe, manifest });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return imageInfo(cacheDir, "debian-13-local");
}

/** `dpkg-query -W -f '${Package}\t${Version}\n'` output as name → version. */
export function parseDpkgList(text: string): Record<string, string> {
  const packages: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const [name, version] = line.split("\t");
    if (name && version) packages[name] = version;
  }
  return Object.fromEntries(Object.entries(packages).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Moves a finished image (in the private work folder `from` lives in) into place, read-only,
 * with a sidecar describing it. Everything is made in the work folder and renamed into the
 * cache: nothing follows a path someone else could have placed, and the sidecar is there before
 * the image (an image without one counts as placed by hand and is never rebuilt).
 */
async function installReadOnly(from: string, to: string, meta: { source: string; sha512?: string; recipe?: string; manifest?: ImageManifest }): Promise<void> {
  await chmod(from, 0o444);
  const sidecar = join(dirname(from), "sidecar.json");
  await writeFile(sidecar, `${JSON.stringify({ ...meta, createdAt: new Date().toISOString() }, null, 2)}\n`, { mode: 0o644, flag: "wx" });
  await rename(sidecar, `${to}.json`);
  await rename(from, to);
}
