/** `boma-it image pull|build|ls`: golden images (download + verify, offline build, list). */
import { DEFAULT_CLOUD_URL, buildLocalImage, ChecksumMismatchError, imageInfo, listImages, localImageRecipe, pullGenericCloud } from "../../../infra/image/images.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals, oneOf } from "../options.ts";
import { asBomaError, ExitCode, RefusedError } from "../../errors.ts";
import { imageDir } from "../../host/paths.ts";

export const imageCommand: CommandDefinition = {
  name: "image",
  summary: "golden images: pull (download + verify), build (offline), ls",
  usage: "image ls | image pull [debian-13-genericcloud] | image build [debian-13-local] [--force] [--json]",
  details: `ls     the cache ($BOMA_IT_IMAGE_DIR, default /var/cache/boma-it/images) and what is in it
pull   download Debian's genericcloud image ($BOMA_IT_DEBIAN_CLOUD_URL) and check it against
       SHA512SUMS; a mismatch is refused (exit 3) and the file is not kept
build  make debian-13-local offline from Debian packages (mmdebstrap from $BOMA_IT_DEBIAN_MIRROR,
       default http://deb.debian.org/debian; needs root; a few minutes)
An image that exists is kept unless --force. Golden files are read-only; runs use overlays.`,
  options: { force: { type: "boolean", default: false } },
  async run({ args, log, runner, env, signal }) {
    expectPositionals("image", args.positionals, 1, 2, "ls, pull or build, and at most one image name");
    const action = oneOf("image", args.positionals[0], ["ls", "pull", "build"] as const, "`boma-it image <action>`");
    const dir = imageDir(env);
    if (action === "ls") {
      const images = await listImages(dir);
      const text = [
        `golden images in ${dir}:`,
        ...images.map((image) =>
          image.present
            ? `  ${image.name.padEnd(24)} ${Math.round((image.sizeBytes ?? 0) / 1024 / 1024)} MiB  ${image.createdAt}  ${image.source ?? ""}`
            : `  ${image.name.padEnd(24)} (missing: ${image.name === "debian-13-local" ? "image build" : "image pull"})`,
        ),
      ].join("\n");
      return { exitCode: ExitCode.pass, json: images, text };
    }
    const name = args.positionals[1] ?? (action === "pull" ? "debian-13-genericcloud" : "debian-13-local");
    const expected = action === "pull" ? "debian-13-genericcloud" : "debian-13-local";
    oneOf(`image ${action}`, name, [expected] as const, `\`boma-it image ${action} <image>\``);
    const existing = await imageInfo(dir, name);
    // A built image from an older recipe is made again; one placed by hand (no sidecar) is kept.
    const stale = action === "build" && existing.present && existing.source?.startsWith("build") === true && existing.recipe !== (await localImageRecipe());
    if (existing.present && !args.values.force && !stale) {
      return { exitCode: ExitCode.pass, json: existing, text: `${name} is already in ${dir} (use --force to make it again)` };
    }
    if (stale) log.info(`${name} in ${dir} was built from another recipe (${existing.recipe ?? "none recorded"}, now ${await localImageRecipe()}): building it again`);
    if (action === "build" && process.getuid?.() !== 0) {
      throw new RefusedError("image build needs root (mmdebstrap builds a root file system)", "sudo npm run boma-it -- image build");
    }
    const hooks = {
      signal,
      onStep: (step: string) => log.info(step),
      onProgress: (() => {
        let last = 0;
        return (detail: string) => {
          // Progress lines at most every 10 s: package managers print a lot.
          if (performance.now() - last < 10_000) return;
          last = performance.now();
          log.info(`  … ${detail.slice(0, 160)}`);
        };
      })(),
    };
    try {
      const info = await log.step(`${action} ${name}`, () =>
        action === "pull"
          ? pullGenericCloud(dir, env.BOMA_IT_DEBIAN_CLOUD_URL ?? DEFAULT_CLOUD_URL, hooks)
          : buildLocalImage(dir, runner, { ...hooks, mirror: env.BOMA_IT_DEBIAN_MIRROR ?? "http://deb.debian.org/debian" }),
      );
      return { exitCode: ExitCode.pass, json: info, text: `${name}: ${info.path} (${Math.round((info.sizeBytes ?? 0) / 1024 / 1024)} MiB)` };
    } catch (error) {
      if (error instanceof ChecksumMismatchError) throw new RefusedError(error.message, "try again later (a mirror may be mid-update) or check BOMA_IT_DEBIAN_CLOUD_URL");
      throw asBomaError(error, signal);
    }
  },
};
