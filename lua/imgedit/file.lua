--- Local image files: `imgedit.file(path [, mime])`.
--
-- A File is a promise to read `path` when a request is built: errors (missing
-- file, too large, unknown type) come back from the operation that uses it as
-- `nil, err`, so a table of images can be written inline without checks.
--
-- Only a regular file is read (a link to one is followed): a directory, a
-- FIFO or a device such as /dev/zero is refused before any byte is read,
-- and the size limit is enforced while reading, not from the size the file
-- reports (imgedit.core's `fs.read`).
-- @module imgedit.file

local core = require("imgedit.core")
local errors = require("imgedit.errors")

local file = {}

--- The largest file `imgedit.file` sends (bytes).
file.MAX_BYTES = 10 * 1024 * 1024

local File = {}
File.__index = File

--- The image types imgedit recognises by their first bytes, with the
-- extension `result:save_all` gives each.
local SIGNATURES = {
  { mime = "image/png", ext = ".png", test = function(b) return b:sub(1, 8) == "\137PNG\r\n\26\n" end },
  { mime = "image/jpeg", ext = ".jpg", test = function(b) return b:sub(1, 3) == "\255\216\255" end },
  { mime = "image/webp", ext = ".webp",
    test = function(b) return b:sub(1, 4) == "RIFF" and b:sub(9, 12) == "WEBP" end },
  { mime = "image/gif", ext = ".gif",
    test = function(b) return b:sub(1, 6) == "GIF87a" or b:sub(1, 6) == "GIF89a" end },
  { mime = "image/bmp", ext = ".bmp", test = function(b) return b:sub(1, 2) == "BM" end },
}

--- The extensions of those types, in that order.
file.EXTENSIONS = {}
for i, signature in ipairs(SIGNATURES) do file.EXTENSIONS[i] = signature.ext end

--- Detects an image's MIME type (and extension) from its first bytes (16
-- are enough), or returns nil.
function file.sniff(bytes)
  for _, signature in ipairs(SIGNATURES) do
    if signature.test(bytes) then return signature.mime, signature.ext end
  end
  return nil
end

--- Whether `path` names a regular file (a link to one counts) that can be
-- opened for reading. Never blocks: a FIFO or a device is not opened.
function file.readable(path)
  if type(path) ~= "string" or path:find("\0", 1, true) or core.fs.kind(path, true) ~= "file" then return false end
  local handle = io.open(path, "rb")
  if not handle then return false end
  handle:close()
  return true
end

--- A local image file. Raises only for wrong argument types.
-- @tparam string path
-- @tparam[opt] string mime e.g. "image/png"; detected from the content if absent
function file.new(path, mime)
  -- raised as luaL_argerror would (imgedit.params, which cannot be required
  -- here: it requires this module)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'file' (string expected, got %s)"):format(type(path)), 2)
  end
  if mime ~= nil and type(mime) ~= "string" then
    error(("bad argument #2 to 'file' (string expected, got %s)"):format(type(mime)), 2)
  end
  return setmetatable({ path = path, mime = mime }, File)
end

function file.is(value)
  return getmetatable(value) == File
end

--- Reads the file: returns its bytes and MIME type, or nil and an error.
function File:read()
  local path = self.path
  local function refuse(kind, message)
    return nil, errors.new(kind, message, { path = path })
  end
  if path:find("\0", 1, true) then
    return refuse("invalid_request", ("the image file name %q contains a NUL byte"):format(path))
  end
  local bytes, problem, code = core.fs.read(path, file.MAX_BYTES)
  if not bytes then
    if code == "EKIND" and problem == "directory" then
      return refuse("invalid_request", ("%s is a directory: give the path of an image file"):format(path))
    elseif code == "EKIND" then
      return refuse("invalid_request", ("%s is a %s, not a regular file: imgedit.file reads regular files only"
        .. " (copy the image into a file first)"):format(path, problem))
    elseif code == "ETOOBIG" then
      local limit = file.MAX_BYTES % 1048576 == 0 and ("%d MiB"):format(file.MAX_BYTES / 1048576)
        or ("%d bytes"):format(file.MAX_BYTES)
      return refuse("invalid_request", ("image file %s is larger than the limit of %s: resize or recompress it")
        :format(path, limit))
    end
    return refuse("io", ("cannot read image file %s: %s"):format(path, tostring(problem)))
  end
  if #bytes == 0 then
    return nil, errors.new("invalid_request", ("image file %s is empty"):format(self.path), { path = self.path })
  end
  local mime = self.mime or file.sniff(bytes)
  if not mime then
    return nil, errors.new("invalid_request", ("%s is not a PNG, JPEG, WebP, GIF or BMP image; pass its MIME type"
      .. " as imgedit.file(path, mime) if it is an image"):format(self.path), { path = self.path })
  end
  if not mime:match("^image/[%w.+-]+$") then
    return nil, errors.new("invalid_request", ("MIME type %q of %s is not an image type like image/png")
      :format(mime, self.path), { path = self.path })
  end
  return bytes, mime
end

--- The file as a `data:` URI, or nil and an error.
function File:data_uri()
  local bytes, mime = self:read()
  if not bytes then return nil, mime end
  return "data:" .. mime .. ";base64," .. core.base64_encode(bytes)
end

function File:__tostring()
  return "imgedit.file(" .. self.path .. ")"
end

return file
