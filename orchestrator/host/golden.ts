/**
 * Golden images as a run and `boma-it image` need them: made (debian-13-local, offline, as root)
 * or pulled (debian-13-genericcloud, checked against SHA512SUMS), with progress. A run makes the
 * image its profile names on first use unless told not to.
 */
import {
  localImageRecipe,
  buildLocalImage,
  ChecksumMismatchError,
  DEFAULT_CLOUD_URL,
  IMAGE_NAMES,
  imageInfo,
  pullGenericCloud,
  type ImageInfo,
  type ImageName,
} from "../../infra/image/images.ts";
import type { Runner } from "../../infra/runner.ts";
import { asBomaError, RefusedError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { Libvirt } from "./libvirt.ts";
import { underRunLock } from "./lock.ts";
import { runLockPath } from "./paths.ts";

/** How an image comes to be: built offline or downloaded. */
export function imageAction(name: string): "build" | "pull" {
  return name === "debian-13-local" ? "build" : "pull";
}

/** The command that makes `name` by hand. */
export function imageFix(name: string): string {
  return imageAction(name) === "build" ? "sudo npm run boma-it -- image build" : "npm run boma-it -- image pull";
}

/** What making an image needs. */
export interface ObtainContext {
  runner: Runner;
  log: Log;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
}

/**
 * Builds or pulls `name` into `dir` now, with a progress line at most every 10 s. A build needs
 * root (refused, exit 3, otherwise); a checksum mismatch is refused and nothing is kept.
 */
export async function obtainImage(dir: string, name: ImageName, context: ObtainContext): Promise<ImageInfo> {
  const { runner, log, env, signal } = context;
  const action = imageAction(name);
  if (action === "build" && process.getuid?.() !== 0) {
    throw new RefusedError(`building ${name} needs root (mmdebstrap builds a root file system)`, "sudo npm run boma-it -- image build");
  }
  let last = 0;
  const hooks = {
    signal,
    onStep: (step: string) => log.info(step),
    onProgress: (detail: string) => {
      // Package managers print a lot: one line every 10 s says it still moves.
      if (performance.now() - last < 10_000) return;
      last = performance.now();
      log.info(`  … ${detail.slice(0, 160)}`);
    },
  };
  try {
    return await log.step(`${action} ${name}`, () =>
      action === "pull"
        ? pullGenericCloud(dir, env.BOMA_IT_DEBIAN_CLOUD_URL ?? DEFAULT_CLOUD_URL, hooks)
        : buildLocalImage(dir, runner, { ...hooks, mirror: env.BOMA_IT_DEBIAN_MIRROR ?? "http://deb.debian.org/debian" }),
    );
  } catch (error) {
    if (error instanceof ChecksumMismatchError)
      throw new RefusedError(error.message, "try again later (a mirror may be mid-update) or check BOMA_IT_DEBIAN_CLOUD_URL");
    const unreachable = action === "pull" && !signal.aborted ? networkFailure(error) : undefined;
    if (unreachable) {
      throw new RefusedError(
        `${name} is not in ${dir} and cannot be downloaded from ${env.BOMA_IT_DEBIAN_CLOUD_URL ?? DEFAULT_CLOUD_URL}: ${unreachable}`,
        "without internet, make debian-13-local offline from Debian packages (`sudo npm run boma-it -- image build`; BOMA_IT_DEBIAN_MIRROR names a local mirror) and say `image: debian-13-local` in the profile (`--image debian-13-local` with --host), or give your own as `image: file:/path/to.qcow2`",
      );
    }
    throw asBomaError(error, signal);
  }
}

/** What says a download could not reach its server (a name that does not resolve, no route, refused), or undefined. */
function networkFailure(error: unknown): string | undefined {
  for (let current: unknown = error; current instanceof Error; current = current.cause) {
    const code = (current as NodeJS.ErrnoException).code;
    if (code && /^(EAI_AGAIN|ENOTFOUND|ECONNREFUSED|ECONNRESET|ENETUNREACH|EHOSTUNREACH|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET)$/.test(code)) {
      return `${code}${(current as { hostname?: string }).hostname ? ` (${(current as { hostname?: string }).hostname})` : ""}`;
    }
  }
  return undefined;
}

/** Whether a built image in the cache comes from another recipe than this boma-it's (one placed by hand never is). */
export async function staleRecipe(info: ImageInfo): Promise<string | undefined> {
  if (!info.present || info.source?.startsWith("build") !== true) return undefined;
  const current = await localImageRecipe();
  return info.recipe === current ? undefined : `built from another recipe (${info.recipe ?? "none recorded"}, this boma-it's is ${current})`;
}

/**
 * Refuses to replace golden images while test VMs exist: their overlays are backed by the
 * image's path, so a restart or a reset would boot the new file under the old overlay.
 */
export async function refuseWhileImagesInUse(libvirt: Libvirt, what: string): Promise<void> {
  const domains = (await libvirt.names("domain")).filter((name) => name.startsWith("boma-it-"));
  if (domains.length > 0) {
    throw new RefusedError(
      `${what} would replace the golden image under the overlays of ${domains.join(", ")}: a reset or a restart of them would then boot a different disk`,
      "remove them first (`npm run boma-it -- down <run>`, or `npm run reap`)",
    );
  }
}

/**
 * `image pull|build` of an image in the cache: made again as a run makes it, under the run lock
 * (never two makers at once) and never under a live overlay.
 */
export async function remakeImage(
  dir: string,
  name: ImageName,
  present: boolean,
  context: ObtainContext & { libvirt: Libvirt; why?: string },
): Promise<ImageInfo> {
  return underRunLock(runLockPath(context.env), `image ${imageAction(name)}`, undefined, async () => {
    if (present && (await context.libvirt.reachable())) await refuseWhileImagesInUse(context.libvirt, `image ${imageAction(name)}`);
    if (context.why) context.log.info(`${name} in ${dir} was ${context.why}: building it again`);
    return obtainImage(dir, name, context);
  });
}

/**
 * Makes sure the golden image a profile names is in the cache and is this boma-it's: present and
 * (for a built one) from the current recipe, or made now (first use, a new recipe) unless
 * `fetch` is false, in which case its absence is refused with the command that makes it. A stale
 * built image is never booted: it is made again (as root) or refused. A `file:` image is the
 * user's own and is never made. Runs under the run lock, after the resource guard made sure no
 * test VM runs on the image.
 */
export async function ensureGoldenImage(dir: string, image: string, fetch: boolean, context: ObtainContext): Promise<void> {
  if (image.startsWith("file:")) return;
  const name = IMAGE_NAMES.find((candidate) => candidate === image);
  if (!name) throw new RefusedError(`unknown golden image ${JSON.stringify(image)}; expected one of ${IMAGE_NAMES.join(", ")}`, "fix the profile's image:");
  const info = await imageInfo(dir, name);
  const stale = await staleRecipe(info);
  if (info.present && !stale) return;
  if (stale) {
    if (!fetch || process.getuid?.() !== 0) {
      throw new RefusedError(
        `golden image ${name} in ${dir} was ${stale}: a run would not test with the VM this boma-it makes`,
        "sudo npm run boma-it -- image build",
      );
    }
    context.log.info(`golden image ${name} in ${dir} was ${stale}: building it again (a few minutes)`);
    await obtainImage(dir, name, context);
    return;
  }
  if (!fetch) throw new RefusedError(`golden image ${name} is not in ${dir} (--no-image-fetch)`, `${imageFix(name)}, or run without --no-image-fetch`);
  context.log.info(
    `golden image ${name} is not in ${dir}: ${imageAction(name) === "build" ? "building it offline from Debian packages (a few minutes)" : "downloading Debian's genericcloud image"}, once (--no-image-fetch refuses instead)`,
  );
  await obtainImage(dir, name, context);
}
