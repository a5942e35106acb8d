/**
 * libvirt's QEMU save image (what `virsh save` writes): a 92-byte header, the domain XML and a
 * cookie in a zero-padded block, then QEMU's migration stream. libvirt restores a save image only
 * into a domain of the same name and UUID, and `save-image-define` refuses to rename; a warm
 * start brings the state another run saved into a domain named after this run, so the XML is
 * rewritten here, in place, as `save-image-define` does (the block has room to spare).
 *
 * Layout (libvirt src/qemu/qemu_saveimage.h, version 2): magic "LibvirtQemudSave" (16 bytes),
 * then little-endian uint32 version, data_len, was_running, compressed, cookieOffset and 14
 * unused words; data_len bytes of data: the XML, NUL, the cookie at cookieOffset, NUL, zeros.
 */
import { open } from "node:fs/promises";

const MAGIC = "LibvirtQemudSave";
const HEADER_BYTES = 92;
const VERSION_AT = 16;
const DATA_LEN_AT = 20;
const COOKIE_OFFSET_AT = 32;

/** The parts of a save image's data block. */
export interface SaveImageData {
  /** The domain XML libvirt restores. */
  xml: string;
  /** The cookie (the CPU the state was saved with), kept as it is. */
  cookie: string;
  /** Room for both (the block's length). */
  capacity: number;
}

/** Reads the XML and cookie of a save image; throws naming the file when it is not one. */
export async function readSaveImage(file: string): Promise<SaveImageData> {
  const handle = await open(file, "r");
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(header, 0, HEADER_BYTES, 0);
    const magic = header.subarray(0, MAGIC.length).toString("latin1");
    if (bytesRead < HEADER_BYTES || magic !== MAGIC) throw new Error(`${file} is not a libvirt save image (no "${MAGIC}" header)`);
    const version = header.readUInt32LE(VERSION_AT);
    if (version !== 2) throw new Error(`${file} is a libvirt save image of version ${version}; only version 2 is read`);
    const capacity = header.readUInt32LE(DATA_LEN_AT);
    const cookieOffset = header.readUInt32LE(COOKIE_OFFSET_AT);
    const data = Buffer.alloc(capacity);
    await handle.read(data, 0, capacity, HEADER_BYTES);
    const xmlEnd = data.indexOf(0);
    if (xmlEnd < 0 || cookieOffset === 0 || cookieOffset > capacity) throw new Error(`${file}: the save image's data block is not an XML and a cookie`);
    const cookieEnd = data.indexOf(0, cookieOffset);
    return {
      xml: data.subarray(0, xmlEnd).toString("utf8"),
      cookie: data.subarray(cookieOffset, cookieEnd < 0 ? capacity : cookieEnd).toString("utf8"),
      capacity,
    };
  } finally {
    await handle.close();
  }
}

/**
 * Replaces the domain XML of a save image in place (the cookie kept). Throws when the new XML and
 * the cookie do not fit the block (libvirt leaves tens of KiB of room; a domain XML is a few).
 */
export async function rewriteSaveImageXml(file: string, xml: string): Promise<void> {
  const { cookie, capacity } = await readSaveImage(file);
  const xmlBytes = Buffer.from(`${xml}\0`, "utf8");
  const cookieBytes = Buffer.from(`${cookie}\0`, "utf8");
  if (xmlBytes.length + cookieBytes.length > capacity) {
    throw new Error(`${file}: the new domain XML (${xmlBytes.length} bytes) does not fit the save image's ${capacity}-byte block`);
  }
  const data = Buffer.alloc(capacity);
  xmlBytes.copy(data, 0);
  cookieBytes.copy(data, xmlBytes.length);
  const cookieOffset = Buffer.alloc(4);
  cookieOffset.writeUInt32LE(xmlBytes.length);
  const handle = await open(file, "r+");
  try {
    await handle.write(cookieOffset, 0, 4, COOKIE_OFFSET_AT);
    await handle.write(data, 0, capacity, HEADER_BYTES);
  } finally {
    await handle.close();
  }
}
