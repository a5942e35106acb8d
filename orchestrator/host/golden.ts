/**
 * Golden images as a run and `boma-it image` need them: made (debian-13-local, offline, as root)
 * or pulled (debian-13-genericcloud, checked against SHA512SUMS), with progress. A run makes the
 * image its profile names on first use unless told not to.
 */
import {
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
    if (error instanceof ChecksumMismatchError) throw new RefusedError(error.message, "try again later (a mirror may be mid-update) or check BOMA_IT_DEBIAN_CLOUD_URL");
    throw asBomaError(error, signal);
  }
}

/**
 * Makes sure the golden image a profile names is in the cache: present, or made now (first use)
 * unless `fetch` is false, in which case its absence is refused with the command that makes it.
 * A `file:` image is the user's own and is never made.
 */
export async function ensureGoldenImage(dir: string, image: string, fetch: boolean, context: ObtainContext): Promise<void> {
  if (image.startsWith("file:")) return;
  const name = IMAGE_NAMES.find((candidate) => candidate === image);
  if (!name) throw new RefusedError(`unknown golden image ${JSON.stringify(image)}; expected one of ${IMAGE_NAMES.join(", ")}`, "fix the profile's image:");
  if ((await imageInfo(dir, name)).present) return;
  if (!fetch) throw new RefusedError(`golden image ${name} is not in ${dir} (--no-image-fetch)`, `${imageFix(name)}, or run without --no-image-fetch`);
  context.log.info(
    `golden image ${name} is not in ${dir}: ${imageAction(name) === "build" ? "building it offline from Debian packages (a few minutes)" : "downloading Debian's genericcloud image"}, once (--no-image-fetch refuses instead)`,
  );
  await obtainImage(dir, name, context);
}
