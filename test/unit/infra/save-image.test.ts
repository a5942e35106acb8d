import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readSaveImage, rewriteSaveImageXml } from "../../../infra/save-image.ts";
import { tempTree } from "../../helpers/tmp.ts";

/** A save image as libvirt 9.0 writes one (qemu_saveimage.c, version 2): header, XML, cookie, zeros, then QEMU's stream. */
function saveImage(xml: string, cookie: string, capacity: number, stream: Buffer): Buffer {
  const header = Buffer.alloc(92);
  header.write("LibvirtQemudSave", 0, "latin1");
  header.writeUInt32LE(2, 16);
  header.writeUInt32LE(capacity, 20);
  header.writeUInt32LE(1, 24);
  header.writeUInt32LE(0, 28);
  header.writeUInt32LE(Buffer.byteLength(xml) + 1, 32);
  const data = Buffer.alloc(capacity);
  data.write(`${xml}\0${cookie}\0`, 0, "utf8");
  return Buffer.concat([header, data, stream]);
}

describe("libvirt save images", () => {
  const stream = Buffer.from("QEVM\0\0\0\x03 the migration stream, untouched");
  const xml = "<domain type='qemu'>\n  <name>boma-it-askari-20261203-170620</name>\n</domain>\n";
  const cookie = "<cookie>\n  <cpu mode='custom'/>\n</cookie>\n";

  it("reads the domain XML and the cookie", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const file = join(tree.dir, "memory.save");
    await writeFile(file, saveImage(xml, cookie, 4096, stream));
    assert.deepEqual(await readSaveImage(file), { xml, cookie, capacity: 4096 });
  });

  it("rewrites the XML in place, a longer one too: the cookie moves behind it, QEMU's stream stays byte for byte", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const file = join(tree.dir, "memory.save");
    await writeFile(file, saveImage(xml, cookie, 4096, stream));
    const renamed = xml.replace("boma-it-askari-20261203-170620", "boma-it-askari-20261203-181500-and-longer");
    await rewriteSaveImageXml(file, renamed);
    assert.deepEqual(await readSaveImage(file), { xml: renamed, cookie, capacity: 4096 });
    const bytes = await readFile(file);
    assert.equal(bytes.length, 92 + 4096 + stream.length);
    assert.deepEqual(bytes.subarray(92 + 4096), stream);
    assert.equal(bytes.readUInt32LE(32), Buffer.byteLength(renamed) + 1, "the cookie's offset follows the XML");
  });

  it("refuses what is no save image, and an XML the block cannot hold, naming the file", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const other = join(tree.dir, "disk.qcow2");
    await writeFile(other, Buffer.alloc(200, 1));
    await assert.rejects(readSaveImage(other), new RegExp(`${other} is not a libvirt save image`));
    const file = join(tree.dir, "memory.save");
    await writeFile(file, saveImage(xml, cookie, 256, stream));
    await assert.rejects(rewriteSaveImageXml(file, `${xml}${"<!-- padding -->".repeat(20)}`), /does not fit the save image's 256-byte block/);
    assert.deepEqual(await readSaveImage(file), { xml, cookie, capacity: 256 }, "left as it was");
  });
});
