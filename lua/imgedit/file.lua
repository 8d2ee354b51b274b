--- Local image files: `imgedit.file(path [, mime])`.
--
-- A File is a promise to read `path` when a request is built: errors (missing
-- file, too large, unknown type) come back from the operation that uses it as
-- `nil, err`, so a table of images can be written inline without checks.
-- @module imgedit.file

local core = require("imgedit.core")
local errors = require("imgedit.errors")

local file = {}

--- The largest file `imgedit.file` sends (bytes).
file.MAX_BYTES = 10 * 1024 * 1024

local File = {}
File.__index = File

--- Detects an image's MIME type from its first bytes, or returns nil.
function file.sniff(bytes)
  if bytes:sub(1, 8) == "\137PNG\r\n\26\n" then return "image/png", ".png" end
  if bytes:sub(1, 3) == "\255\216\255" then return "image/jpeg", ".jpg" end
  if bytes:sub(1, 4) == "RIFF" and bytes:sub(9, 12) == "WEBP" then return "image/webp", ".webp" end
  if bytes:sub(1, 6) == "GIF87a" or bytes:sub(1, 6) == "GIF89a" then return "image/gif", ".gif" end
  if bytes:sub(1, 2) == "BM" then return "image/bmp", ".bmp" end
  return nil
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
  local handle, open_problem = io.open(self.path, "rb")
  if not handle then
    return nil, errors.new("io", "cannot read image file: " .. tostring(open_problem), { path = self.path })
  end
  local size = handle:seek("end")
  if size and size > file.MAX_BYTES then
    handle:close()
    return nil, errors.new("invalid_request", ("image file %s is %d bytes; the limit is %d (10 MiB): resize or"
      .. " recompress it"):format(self.path, size, file.MAX_BYTES), { path = self.path })
  end
  handle:seek("set", 0)
  local bytes, read_problem = handle:read("*a")
  handle:close()
  if not bytes then
    return nil, errors.new("io", ("cannot read image file %s: %s"):format(self.path, tostring(read_problem)),
      { path = self.path })
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
