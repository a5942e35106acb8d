/** `boma-it image pull|build|ls`: golden images (download + verify, offline build, list). */
import { IMAGE_NAMES, imageInfo, listImages, type ImageName } from "../../../infra/image/images.ts";
import { closest } from "../../did-you-mean.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals, oneOf } from "../options.ts";
import { BadInputError, ExitCode } from "../../errors.ts";
import { imageAction, remakeImage, staleRecipe } from "../../host/golden.ts";
import { libvirtFor } from "../../host/libvirt.ts";
import { imageDir } from "../../host/paths.ts";

export const imageCommand: CommandDefinition = {
  name: "image",
  summary: "golden images: pull (download + verify), build (offline), ls",
  usage: "image ls | image pull [debian-13-genericcloud] | image build [debian-13-local] [--force] [--json]",
  details: `ls     the cache ($BOMA_IT_IMAGE_DIR, default /var/cache/boma-it/images) and what is in it;
       --json has a built image's manifest: its recipe and every package with its version
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
            ? `  ${image.name.padEnd(24)} ${Math.round((image.sizeBytes ?? 0) / 1024 / 1024)} MiB  ${image.createdAt}  ${image.source ?? ""}${image.manifest ? `  ${Object.keys(image.manifest.packages).length} packages, recipe ${image.manifest.recipe} (--json lists them)` : ""}`
            : `  ${image.name.padEnd(24)} (missing: image ${imageAction(image.name)}, or made on first use by a run)`,
        ),
      ].join("\n");
      return { exitCode: ExitCode.pass, json: images, text };
    }
    const expected = action === "pull" ? "debian-13-genericcloud" : "debian-13-local";
    const asked = args.positionals[1] ?? expected;
    // An image the other action makes (or a typo of one) is said so, not only refused.
    const meant = IMAGE_NAMES.includes(asked as ImageName) ? asked : closest(asked, IMAGE_NAMES);
    if (meant && meant !== expected) {
      throw new BadInputError({
        message: `\`boma-it image ${action}\`: ${meant} is made by \`boma-it image ${imageAction(meant)}\`, not ${action === "pull" ? "pulled" : "built"}${meant === asked ? "" : ` (found ${JSON.stringify(asked)}: did you mean ${meant}?)`}`,
      });
    }
    const name = oneOf(`image ${action}`, asked, [expected] as const, `\`boma-it image ${action} <image>\``);
    const existing = await imageInfo(dir, name);
    // A built image from an older recipe is made again; one placed by hand (no sidecar) is kept.
    const stale = action === "build" ? await staleRecipe(existing) : undefined;
    if (existing.present && !args.values.force && !stale) {
      return { exitCode: ExitCode.pass, json: existing, text: `${name} is already in ${dir} (use --force to make it again)` };
    }
    const info = await remakeImage(dir, name, existing.present, {
      runner,
      log,
      env,
      signal,
      libvirt: libvirtFor(runner, env),
      ...(stale ? { why: stale } : {}),
    });
    return { exitCode: ExitCode.pass, json: info, text: `${name}: ${info.path} (${Math.round((info.sizeBytes ?? 0) / 1024 / 1024)} MiB)` };
  },
};
