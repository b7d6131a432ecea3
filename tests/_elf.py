"""Reading compiled modules' ELF section headers, for the tests of compiler settings."""

import struct


def elf_sections(data):
    """{section name: (file offset, size)} of a 64-bit little-endian ELF file's bytes."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]  # sh_offset of the section-name table
    return {data[names_at + name:data.index(b"\0", names_at + name)].decode(): (offset, size)
            for name, _type, _flags, _addr, offset, size in headers}
