-- Real, valid PNG images for the emulator, of a requested approximate size.
--
-- The image is a solid colour (derived from a seed string), stored without
-- compression. Every scanline is identical, so every full deflate "stored"
-- block is identical too; each such block is put in its own IDAT chunk, which
-- makes those chunks byte-for-byte identical. Their CRC is computed once and
-- the image is kept as a list of pieces that repeats one string: a 200 MiB
-- PNG costs about as much CPU and memory as a 64 KiB one. Adler-32 of the
-- repeated blocks is combined arithmetically for the same reason.
--
-- Works on Lua 5.1 to 5.4 and LuaJIT without bitwise operators in the source.

local floor = math.floor
local byte, char, rep, sub = string.byte, string.char, string.rep, string.sub
local concat = table.concat

local M = {}

local compile = loadstring or load

-- CRC-32 (IEEE, reflected 0xEDB88320) ------------------------------------

local TWO32 = 4294967296

-- Arithmetic XOR of two 8-bit numbers, by a 256x256 table: only used when no
-- bitwise library or operator exists (plain Lua 5.1).
local xor8_table
local function xor8(a, b)
  if not xor8_table then
    xor8_table = {}
    for x = 0, 255 do
      for y = 0, 255 do
        local r, bitv, xa, yb = 0, 1, x, y
        for _ = 1, 8 do
          if xa % 2 ~= yb % 2 then r = r + bitv end
          xa, yb, bitv = floor(xa / 2), floor(yb / 2), bitv * 2
        end
        xor8_table[x * 256 + y] = r
      end
    end
  end
  return xor8_table[a * 256 + b]
end

local function xor32(a, b)
  local r, mul = 0, 1
  for _ = 1, 4 do
    r = r + xor8(a % 256, b % 256) * mul
    a, b, mul = floor(a / 256), floor(b / 256), mul * 256
  end
  return r
end

-- Backends, fastest first: bxor(a, b) -> 0..2^32-1, and update(t, crc, s),
-- the table-driven CRC over s from the running (pre-inverted) register crc.
local bxor, update
do
  -- Lua 5.3+: native operators, compiled from a string so that this file
  -- still parses on 5.1/LuaJIT (where compiling it fails and returns nil).
  local native = compile([[
    local byte = string.byte
    return function(a, b) return a ~ b end, function(t, crc, s)
      for i = 1, #s do crc = t[(crc ~ byte(s, i)) & 0xff] ~ (crc >> 8) end
      return crc
    end
  ]])
  local bitlib = rawget(_G, "bit32")
  if not bitlib and rawget(_G, "jit") then
    local ok, lib = pcall(require, "bit")
    if ok then bitlib = lib end
  end
  if native then
    bxor, update = native()
  elseif bitlib then
    -- LuaJIT's bit returns signed 32-bit numbers: normalise every result.
    local bx, band, rshift = bitlib.bxor, bitlib.band, bitlib.rshift
    bxor = function(a, b) return bx(a, b) % TWO32 end
    update = function(t, crc, s)
      for i = 1, #s do
        crc = bx(t[band(bx(crc, byte(s, i)), 0xff)], rshift(crc, 8))
      end
      return crc % TWO32
    end
  else
    bxor = xor32
    update = function(t, crc, s)
      for i = 1, #s do
        crc = xor32(t[xor8(crc % 256, byte(s, i))], floor(crc / 256))
      end
      return crc
    end
  end
end

local crc_table = {}
for n = 0, 255 do
  local c = n
  for _ = 1, 8 do
    if c % 2 == 1 then
      c = bxor(floor(c / 2), 0xEDB88320)
    else
      c = floor(c / 2)
    end
  end
  crc_table[n] = c
end

--- CRC-32 of a string (as used by PNG and zlib's gzip), 0..2^32-1.
function M.crc32(s)
  -- 0xFFFFFFFF - x == x XOR 0xFFFFFFFF for 32-bit x: no XOR needed here.
  return 0xFFFFFFFF - update(crc_table, 0xFFFFFFFF, s)
end

-- Adler-32 as an (a, b) pair, combinable without bit operations -----------

local BASE = 65521

local function adler_pair(s)
  local a, b = 1, 0
  for i = 1, #s do
    a = (a + byte(s, i)) % BASE
    b = (b + a) % BASE
  end
  return a, b
end

-- Adler of X..Y from adler(X) = (a1, b1) and adler(Y) = (a2, b2), #Y = len2.
local function adler_combine(a1, b1, a2, b2, len2)
  return (a1 + a2 - 1) % BASE, (b1 + b2 + (len2 % BASE) * (a1 - 1)) % BASE
end

-- Byte encoding helpers ----------------------------------------------------

local function be32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function le16(n)
  return char(n % 256, floor(n / 256))
end

local function chunk(kind, data)
  return be32(#data) .. kind .. data .. be32(M.crc32(kind .. data))
end

local function stored_block(final, payload)
  local len = #payload
  return (final and "\1" or "\0") .. le16(len) .. le16(65535 - len) .. payload
end

-- Colour from a seed: a small string hash, spread over 24 bits.
local function colour_of(seed)
  local h = 5381
  for i = 1, #seed do h = (h * 33 + byte(seed, i)) % 16777213 end
  return floor(h / 65536) % 256, floor(h / 256) % 256, h % 256
end

-- Dimensions for an approximate file size: roughly square while small,
-- 1024 pixels wide (3073-byte rows, 21 rows per stored block) when large.
local function dimensions(size)
  local width = floor(math.sqrt(size / 3))
  if width < 1 then width = 1 elseif width > 1024 then width = 1024 end
  local rowlen = 1 + 3 * width
  local height = floor((size - 80) / rowlen + 0.5)
  if height < 1 then height = 1 end
  return width, height, rowlen
end

local SIGNATURE = "\137PNG\r\n\26\n"
local IEND = chunk("IEND", "")

local function build(seed, size)
  local r, g, b = colour_of(seed)
  local width, height, rowlen = dimensions(size)
  local row = "\0" .. rep(char(r, g, b), width) -- filter type 0 (None)
  local rows_per_block = floor(65535 / rowlen)
  local full_blocks = math.ceil(height / rows_per_block) - 1
  local tail_rows = height - full_blocks * rows_per_block

  local pieces = {
    SIGNATURE,
    -- 8-bit truecolour, deflate, adaptive filtering, no interlace
    chunk("IHDR", be32(width) .. be32(height) .. "\8\2\0\0\0"),
    chunk("IDAT", "\120\1"), -- zlib header alone: CMF 0x78, FLG 0x01
  }
  local a, b2 = 1, 0
  if full_blocks > 0 then
    local payload = rep(row, rows_per_block)
    local block = chunk("IDAT", stored_block(false, payload))
    local pa, pb = adler_pair(payload)
    for _ = 1, full_blocks do
      pieces[#pieces + 1] = block
      a, b2 = adler_combine(a, b2, pa, pb, #payload)
    end
  end
  local tail = rep(row, tail_rows)
  local ta, tb = adler_pair(tail)
  a, b2 = adler_combine(a, b2, ta, tb, #tail)
  pieces[#pieces + 1] = chunk("IDAT", stored_block(true, tail) .. be32(b2 * 65536 + a))
  pieces[#pieces + 1] = IEND

  local total = 0
  for i = 1, #pieces do total = total + #pieces[i] end
  return {pieces = pieces, size = total, width = width, height = height, rgb = {r, g, b}}
end

-- Cache of built images. An image is small in memory (its pieces repeat one
-- string), so a count bound is enough; the oldest entry goes first.
local CACHE_MAX = 64
local cache, cache_order = {}, {}

--- A PNG of about `size` bytes (at least a 1x1 image), colour from `seed`
-- (a string, or any value: its tostring() is used).
-- Returns {pieces = array of strings (the file, in order), size = bytes,
-- width, height, rgb}. The same image object is returned for the same
-- colour and size while cached: treat it as read-only.
function M.image(seed, size)
  seed = tostring(seed)
  local r, g, b = colour_of(seed)
  local key = r .. "," .. g .. "," .. b .. ":" .. size
  local img = cache[key]
  if not img then
    img = build(seed, size)
    if #cache_order >= CACHE_MAX then
      cache[table.remove(cache_order, 1)] = nil
    end
    cache[key] = img
    cache_order[#cache_order + 1] = key
  end
  return img
end

--- The whole file as one string (for small images and tests).
function M.bytes(img)
  return concat(img.pieces)
end

-- Base64 -------------------------------------------------------------------

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
-- 12-bit groups to two characters: two lookups per 3 input bytes.
local pair = {}
for i = 0, 4095 do
  local hi, lo = floor(i / 64) + 1, i % 64 + 1
  pair[i] = sub(ALPHABET, hi, hi) .. sub(ALPHABET, lo, lo)
end

-- Encodes s, whose length is a multiple of 3 (no padding).
local function encode3(s)
  local out, n = {}, 0
  for i = 1, #s, 3 do
    local x, y, z = byte(s, i, i + 2)
    local v = x * 65536 + y * 256 + z
    n = n + 1
    out[n] = pair[floor(v / 4096)] .. pair[v % 4096]
  end
  return concat(out)
end

local function encode_last(s) -- 1 or 2 bytes, padded
  local x, y = byte(s, 1, 2)
  local v = x * 65536 + (y or 0) * 256
  local text = pair[floor(v / 4096)] .. pair[v % 4096]
  return y and sub(text, 1, 3) .. "=" or sub(text, 1, 2) .. "=="
end

--- Standard, padded base64 of a string.
function M.base64(s)
  local cut = #s - #s % 3
  local text = encode3(sub(s, 1, cut))
  if cut < #s then text = text .. encode_last(sub(s, cut + 1)) end
  return text
end

--- Base64 of an image as pieces (array of strings) whose concatenation is
-- the standard, padded encoding. Repeated input pieces meet only three
-- possible carry-overs of 0-2 bytes, so each distinct (piece, carry) pair is
-- encoded once: the cost does not grow with the image size. Cached per image.
function M.base64_pieces(img)
  if img.base64 then return img.base64 end
  local out, memo, carry = {}, {}, ""
  for i = 1, #img.pieces do
    local piece = img.pieces[i]
    local by_carry = memo[piece]
    if not by_carry then
      by_carry = {}
      memo[piece] = by_carry
    end
    local done = by_carry[carry]
    if not done then
      local s = carry .. piece
      local cut = #s - #s % 3
      done = {encode3(sub(s, 1, cut)), sub(s, cut + 1)}
      by_carry[carry] = done
    end
    out[#out + 1] = done[1]
    carry = done[2]
  end
  if carry ~= "" then out[#out + 1] = encode_last(carry) end
  img.base64 = out
  return out
end

return M
