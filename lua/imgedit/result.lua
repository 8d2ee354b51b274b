--- Results and their images.
--
-- A Result is what a finished operation returns; each of its images has a
-- `url` (on the provider's CDN) and/or `b64_json` (the image itself).
--
-- Saving keeps only complete images: bytes that are not an image (an HTML
-- page served with 200 for an image URL, a body under a text/* Content-Type)
-- are a `decode` error and nothing is kept. Where the bytes go depends on
-- what the target path names (imgedit.core's `fs.kind`):
--
-- - nothing, or a regular file: the image goes to a temporary name beside
--   it, renamed over it once complete and checked, so the old file is
--   replaced at once or not at all;
-- - a symbolic link: the same, done to the file it points to (the link
--   stays); a link to nothing is refused;
-- - a FIFO or a device: written directly, streamed from a checked temporary
--   file, never renamed over; every write error comes back (ENOSPC from a
--   full device; a FIFO that no process reads is an error at once);
-- - a directory, a socket: refused.
--
-- Base64 images (`response_format = "b64_json"`) are decoded by
-- the C core while the response arrives, each into a buffer of its own (a
-- blob); the JSON handed to cjson is small. So:
--
-- - `image:save`, `image:bytes` and `result:save_all` work from the decoded
--   bytes: saving writes them straight to the file, with no Lua copy.
-- - `image.b64_json` is still there, but is built on first access, by
--   encoding the bytes again, and then kept on the image: reading it costs
--   4/3 of the image's size in memory for as long as the image lives. It is
--   the canonical encoding (padded, one line, `/` not escaped), which is what
--   providers send; a value that is not valid base64 reads back as it was
--   received (escapes undone), less the white space before its first error.
-- - `result.raw.data[i].b64_json` holds a placeholder, `core.BLOB_PREFIX`
--   and the blob's number (`"imgedit-blob:<n>"`), not the base64.
--
-- A blob's memory is freed when its image is collected. Lua's collector does
-- not see that memory, so the core runs a full collection whenever the blobs
-- it has handed out since the last one add up to the size of the Lua heap:
-- dropped results do not pile up.
-- @module imgedit.result

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local file = require("imgedit.file")
local params = require("imgedit.params")
local scheduler = require("imgedit.scheduler")
local transport = require("imgedit.transport")

local fs = core.fs

local result = {}

local Result = {}
Result.__index = Result

local Image = {}

-- The client an image downloads through, and the blob (imgedit.core) holding
-- its decoded bytes, kept out of the image's own fields so that printing a
-- result shows only what the provider returned.
local client_of = setmetatable({}, { __mode = "k" })
local blob_of = setmetatable({}, { __mode = "k" })

-- `b64_json` of an image whose bytes are in a blob: encoded on first access,
-- then an ordinary field.
function Image.__index(image, key)
  if key == "b64_json" then
    local blob = blob_of[image]
    if not blob then return nil end
    local text = blob:base64()
    rawset(image, "b64_json", text)
    return text
  end
  return Image[key]
end

--- Wraps provider output. `fields.images` is an array of
-- `{url =, b64_json =, blob =, revised_prompt =, error =}` tables; `blob` (a
-- blob of imgedit.core's `res.blobs`) stands for `b64_json`; `error` (an
-- imgedit error) marks an image the provider failed to make, which `save`
-- and `bytes` return.
function result.new(client, fields)
  local images = {}
  for i, entry in ipairs(fields.images or {}) do
    local image = setmetatable({
      url = entry.url, revised_prompt = entry.revised_prompt, index = i, error = entry.error,
    }, Image)
    if entry.blob then
      blob_of[image] = entry.blob
    else
      image.b64_json = entry.b64_json
    end
    client_of[image] = client
    images[i] = image
  end
  fields.images = images
  return setmetatable(fields, Result)
end

--- A name beside `path` for the image while it is written: random, and
-- different in two processes that seed math.random alike.
local function temporary_name(path)
  local address = tostring({}):match("0x(%x+)") or ""
  return ("%s.part-%06x%s"):format(path, math.random(0, 0xFFFFFF), address:sub(-4))
end

local function io_error(message, path)
  return errors.new("io", message, { path = path })
end

local function read_head(path)
  local handle = io.open(path, "rb")
  if not handle then return "" end
  local head = handle:read(16) or ""
  handle:close()
  return head
end

local function invalid_base64(image, problem)
  return errors.new("decode", ("image %d: b64_json is not valid base64 (%s)"):format(image.index, problem))
end

local function empty_base64(image)
  return errors.new("decode", ("image %d: b64_json is empty"):format(image.index))
end

--- The blob of a base64 image, or nil and a decode error. Also nil, nil
-- for an image without a blob.
local function usable_blob(image)
  local blob = blob_of[image]
  if not blob then return nil, nil end
  local problem = blob:error()
  if problem then return nil, invalid_base64(image, problem) end
  if #blob == 0 then return nil, empty_base64(image) end
  return blob
end

--- Does the image carry its bytes (base64) rather than a URL?
local function is_base64(image)
  return blob_of[image] ~= nil or rawget(image, "b64_json") ~= nil
end

--- The decoded bytes of a b64_json image, or nil and a decode error.
local function decode_b64(image)
  local blob, err = usable_blob(image)
  if err then return nil, err end
  if blob then return blob:bytes() end
  local bytes, problem = core.base64_decode(image.b64_json)
  if not bytes then return nil, invalid_base64(image, problem) end
  if #bytes == 0 then return nil, empty_base64(image) end
  return bytes
end

--- nil when `head` (the first bytes) is an image and `content_type` (of a
-- download) is not text; else the decode error that says so. `source`
-- names where the bytes came from.
local function not_an_image(image, head, content_type, source)
  local media = type(content_type) == "string" and content_type:lower():match("^%s*([^;%s]+)") or nil
  local reason
  if file.sniff(head) then
    if not (media and media:match("^text/")) then return nil end
    reason = ("is served as %s, not as an image"):format(media)
  else
    reason = ("is not an image%s: it starts with \"%s\""):format(media and (", served as " .. media) or "",
      (head:gsub("[^\32-\126]", ".")))
  end
  return errors.new("decode", ("image %d: %s %s; nothing was kept"):format(image.index, source, reason),
    { url = image.url })
end

local function check_download_url(client, url)
  local problem = transport.check_url(url, client.config.allow_http)
  -- the URL is the provider's, not the caller's: an unexpected answer
  if problem then
    return errors.new("decode", "the provider returned a result URL imgedit will not fetch: " .. problem,
      { advice = "report it to the provider; allow_http = true accepts plain http:// result hosts" })
  end
  return nil
end

--- Writes the image, checked, to the regular file `tmp` (a temporary name):
-- downloaded (streamed, never held in memory) or decoded. Returns true, or
-- nil and an error; `tmp` is gone on failure.
local function stage(image, tmp, deadline)
  if is_base64(image) then
    local blob, err = usable_blob(image)
    if err then return nil, err end
    local bytes
    if not blob then
      bytes, err = decode_b64(image)
      if not bytes then return nil, err end
    end
    err = not_an_image(image, blob and blob:sniff(16) or bytes:sub(1, 16), nil, "its b64_json")
    if err then return nil, err end
    local ok, problem
    if blob then
      ok, problem = blob:write(tmp)
    else
      ok, problem = core.fs.write(tmp, bytes)
      problem = problem and ("cannot write %s: %s"):format(tmp, problem)
    end
    if not ok then
      os.remove(tmp)
      return nil, io_error(problem, tmp)
    end
    return true
  end
  if not image.url then
    return nil, errors.new("decode", ("image %d has neither url nor b64_json"):format(image.index))
  end
  local refused = check_download_url(client_of[image], image.url)
  if refused then return nil, refused end
  local res, err = transport.request(client_of[image].session, {
    method = "GET", url = image.url, output = tmp, download = true, deadline = deadline,
  })
  if not res then
    os.remove(tmp)
    return nil, err
  end
  if res.bytes == 0 then
    os.remove(tmp)
    return nil, errors.new("decode", ("image %d: the download from %s was empty"):format(image.index, image.url),
      { status = res.status })
  end
  err = not_an_image(image, read_head(tmp), res.headers and res.headers["content-type"],
    "the download from " .. image.url)
  if err then
    os.remove(tmp)
    err.status = res.status
    return nil, err
  end
  return true
end

--- Written directly rather than renamed over.
local DIRECT = { fifo = true, ["character device"] = true, ["block device"] = true }

--- Where the bytes for `path` go: `{path = the file to write (a link's
-- target), linked = true for a link, direct = kind for a device or FIFO,
-- exists = true}`, or nil and an error.
local function destination(path)
  if path:find("\0", 1, true) then
    return nil, errors.new("invalid_request", ("the path %q contains a NUL byte"):format(path), { path = path })
  end
  local kind, problem, code = fs.kind(path)
  if not kind then
    -- missing (or its directory is: writing the temporary file says so)
    if code == "ENOENT" then return { path = path } end
    return nil, io_error(("cannot save to %s: %s"):format(path, problem), path)
  end
  local target, linked = path, false
  if kind == "link" then
    linked = true
    target, problem, code = fs.realpath(path)
    if not target then
      if code == "ENOENT" then
        return nil, io_error(("cannot save to %s: it is a symbolic link to a file that does not exist; create"
          .. " that file or remove the link"):format(path), path)
      end
      return nil, io_error(("cannot save to %s: the symbolic link cannot be followed: %s"):format(path, problem), path)
    end
    kind, problem = fs.kind(target)
    if not kind then
      return nil, io_error(("cannot save to %s (a link to %s): %s"):format(path, target, problem), path)
    end
  end
  if kind == "file" then return { path = target, linked = linked, exists = true } end
  if DIRECT[kind] then return { path = target, linked = linked, direct = kind, exists = true } end
  if kind == "directory" then
    return nil, io_error(("cannot save to %s: it is a directory; give a file name (result:save_all saves into a"
      .. " directory)"):format(path), path)
  end
  return nil, io_error(("cannot save to %s: it is a %s; images are saved to files, devices and FIFOs only")
    :format(path, kind), path)
end

local function direct_error(dest, problem, code)
  if code == "ENXIO" and dest.direct == "fifo" then
    return io_error(("cannot write %s: no process has this FIFO open for reading; start its reader first")
      :format(dest.path), dest.path)
  end
  return io_error(("cannot write %s (a %s): %s"):format(dest.path, dest.direct, tostring(problem)), dest.path)
end

local function move_error(path, problem)
  return io_error(("cannot move the image into place at %s: %s"):format(path, tostring(problem)), path)
end

--- Puts the complete, checked temporary file `tmp` in place at `dest` (from
-- `destination`): streamed into a device or FIFO; else renamed over the
-- file (`replace`) or linked under the name only if it is still free.
-- `near`: tmp is in the directory of dest.path (else it is copied there
-- first). Returns true, or nil and an error (tmp is gone), or nil, nil when
-- the name was taken meanwhile (tmp is kept).
local function publish(tmp, dest, replace, near)
  if dest.direct then
    local ok, problem, code = fs.copy(tmp, dest.path)
    os.remove(tmp)
    if not ok then return nil, direct_error(dest, problem, code) end
    return true
  end
  if not near then
    -- a link's target, perhaps on another file system: a temporary name there
    local there = temporary_name(dest.path)
    local ok, problem = fs.copy(tmp, there)
    os.remove(tmp)
    if not ok then
      os.remove(there)
      return nil, io_error(("cannot write %s: %s"):format(there, tostring(problem)), dest.path)
    end
    tmp = there
  end
  if not replace then
    local ok, problem, code = fs.link(tmp, dest.path)
    if ok then
      os.remove(tmp)
      return true
    end
    if code == "EEXIST" then return nil, nil end
    if code ~= "EPERM" and code ~= "EOPNOTSUPP" and code ~= "EMLINK" and code ~= "ENOSYS" then
      os.remove(tmp)
      return nil, move_error(dest.path, problem)
    end
    -- no hard links on this file system: look, then rename
    if fs.kind(dest.path) then return nil, nil end
  else
    -- only a regular file is ever renamed over, even one swapped meanwhile
    local kind = fs.kind(dest.path)
    if kind and kind ~= "file" then
      os.remove(tmp)
      return nil, io_error(("%s became a %s while the image was saved; it was not replaced"):format(dest.path, kind),
        dest.path)
    end
  end
  local ok, problem = os.rename(tmp, dest.path)
  if not ok then
    os.remove(tmp)
    return nil, move_error(dest.path, problem)
  end
  return true
end

--- A new empty file of the system's temporary directory, or nil and an error.
local function scratch_file()
  local ok, name = pcall(os.tmpname)
  if not ok then return nil, io_error("cannot create a temporary file: " .. tostring(name)) end
  return name
end

--- The absolute deadline of `opts.timeout`, or nil; raises for wrong types.
local function deadline_of(opts, fname, position)
  if opts == nil then return nil end
  if type(opts) ~= "table" then params.argerror(position, fname, "table", opts) end
  if opts.timeout == nil then return nil end
  if type(opts.timeout) ~= "number" or opts.timeout <= 0 then
    error(("bad argument #%d to '%s' (timeout must be a positive number of seconds)"):format(position, fname), 3)
  end
  return scheduler.now() + opts.timeout
end

--- Saves the image to `path` (streamed from its URL, or decoded from base64).
-- No API key is sent to the image's host. A regular file at `path` is
-- replaced at once when the image is complete and checked; a link is
-- written through to its target; a device or FIFO is written directly (see
-- the module's description). Returns `path`, or nil and an error; nothing is
-- left at `path` unless the image is complete.
-- @tparam string path
-- @tparam[opt] table opts `timeout`: seconds for the whole save, retries included
function Image:save(path, opts)
  params.check_self(self, Image, "image.save", "image")
  if type(path) ~= "string" then params.argerror(1, "save", "string", path) end
  local deadline = deadline_of(opts, "save", 2)
  if self.error then return nil, self.error end
  local dest, err = destination(path)
  if not dest then return nil, err end
  local tmp
  if dest.direct then
    -- checked in a scratch file first: nothing but an image reaches the device
    tmp, err = scratch_file()
    if not tmp then return nil, err end
  else
    tmp = temporary_name(dest.path)
  end
  local ok
  ok, err = stage(self, tmp, deadline)
  if not ok then return nil, err end
  ok, err = publish(tmp, dest, true, true)
  if not ok then return nil, err end
  return path
end

--- The image's bytes, or nil and an error (`decode` when they are not an image).
-- @tparam[opt] table opts `timeout`: seconds for the whole download
function Image:bytes(opts)
  params.check_self(self, Image, "image.bytes", "image")
  local deadline = deadline_of(opts, "bytes", 1)
  if self.error then return nil, self.error end
  if is_base64(self) then
    local bytes, err = decode_b64(self)
    if not bytes then return nil, err end
    err = not_an_image(self, bytes:sub(1, 16), nil, "its b64_json")
    if err then return nil, err end
    return bytes
  end
  local client = client_of[self]
  local refused = check_download_url(client, self.url or "")
  if refused then return nil, refused end
  local res, err = transport.request(client.session, { method = "GET", url = self.url, download = true,
                                                   deadline = deadline })
  if not res then return nil, err end
  err = not_an_image(self, res.body:sub(1, 16), res.headers and res.headers["content-type"],
    "the download from " .. self.url)
  if err then
    err.status = res.status
    return nil, err
  end
  return res.body
end

function Image:__tostring()
  if self.error then return "imgedit.image(failed: " .. tostring(self.error.message) .. ")" end
  if self.url then return "imgedit.image(" .. self.url .. ")" end
  local blob = blob_of[self]
  if blob and not rawget(self, "b64_json") then
    -- the length b64_json would have, without building it
    if blob:error() then return "imgedit.image(base64, invalid)" end
    return ("imgedit.image(base64, %d characters)"):format(math.ceil(#blob / 3) * 4)
  end
  return ("imgedit.image(base64, %d characters)"):format(#(self.b64_json or ""))
end

--- A file name prefix that cannot leave the directory it is used in.
local function safe_prefix(prefix)
  prefix = tostring(prefix):gsub("[^%w._-]", "_"):gsub("^%.+", "")
  if prefix == "" then return "image" end
  return prefix
end

--- How many other names save_all tries for an image whose name is taken.
local ALTERNATIVES = 999

--- `opts.overwrite` of save_all as a function of an existing path.
local function overwrite_policy(opts)
  local overwrite = opts and opts.overwrite
  if overwrite == nil or overwrite == true then return function() return true end end
  if overwrite == false then return function() return false end end
  if type(overwrite) == "function" then return function(path) return overwrite(path) == true end end
  error(("bad argument #3 to 'save_all' (overwrite must be a boolean or a function, got %s)")
    :format(type(overwrite)), 3)
end

--- Puts the checked image `tmp` (in the directory of `wanted`) in place as
-- `wanted`, or, when that name exists and may not be replaced, as the first
-- free one of `<stem>.1<ext>`, `<stem>.2<ext>`, ... Returns the name used,
-- or nil and an error (tmp is gone either way).
local function settle(tmp, wanted, may_replace)
  local stem, ext = wanted:match("^(.-)(%.[^./]*)$")
  for k = 0, ALTERNATIVES do
    local name = k == 0 and wanted or ("%s.%d%s"):format(stem, k, ext)
    local exists = fs.kind(name) ~= nil
    if not exists or may_replace(name) then
      local dest, err = destination(name)
      if not dest then
        os.remove(tmp)
        return nil, err
      end
      local ok
      ok, err = publish(tmp, dest, dest.exists == true, not dest.linked)
      if ok then return name end
      if err then return nil, err end
      -- nil, nil: the name was taken meanwhile; the next one
    end
  end
  os.remove(tmp)
  return nil, io_error(("cannot save %s: that name and the %d after it are taken"):format(wanted, ALTERNATIVES),
    wanted)
end

--- Saves every image into directory `dir` as `<prefix>-<n>.<ext>`, the
-- extension following the image's actual type. A name that exists is
-- replaced (a regular file atomically, a link's target, a device or FIFO
-- written through, as `image:save` does) unless `opts.overwrite` says no:
-- then the image takes the first free name of `<prefix>-<n>.1.<ext>`,
-- `<prefix>-<n>.2.<ext>`, ..., and nothing that existed is touched.
--
-- Returns the list of paths and a table `taken`: `taken[k]` is the name
-- `paths[k]` was to have and could not (nil for the others). Or nil and an
-- error whose `saved` field lists the files already written. An image the
-- provider failed to make (`image.error`) does not stop the others: they
-- are all saved, then the first such error is returned.
-- @tparam string dir an existing directory ("." for the current one; "" is an invalid_request)
-- @tparam[opt] string prefix default: the task or request id, else "image"
-- @tparam[opt] table opts `timeout`: seconds for saving them all; `overwrite`:
-- true (the default), false (never replace an existing file), or a function
-- of an existing path that returns true where it may be replaced
function Result:save_all(dir, prefix, opts)
  params.check_self(self, Result, "result.save_all", "result")
  if type(dir) ~= "string" then params.argerror(1, "save_all", "string", dir) end
  if prefix ~= nil and type(prefix) ~= "string" then params.argerror(2, "save_all", "string", prefix) end
  local deadline = deadline_of(opts, "save_all", 3)
  local may_replace = overwrite_policy(opts)
  if dir == "" then
    return nil, errors.new("invalid_request", 'save_all: the directory is "" (empty); pass "." to save into the'
      .. " current directory")
  end
  if dir:find("\0", 1, true) then
    return nil, errors.new("invalid_request", ("save_all: the directory %q contains a NUL byte"):format(dir))
  end
  local kind, problem, code = fs.kind(dir, true)
  if kind ~= "directory" then
    if code == "ENOENT" then
      return nil, io_error(("cannot save into %s: there is no such directory; create it first"):format(dir), dir)
    end
    return nil, io_error(("cannot save into %s: %s"):format(dir, kind and ("it is a " .. kind .. ", not a directory")
      or tostring(problem)), dir)
  end
  -- a default prefix comes from the server: scrubbed of the key, as any name it gives
  prefix = safe_prefix(prefix or errors.scrub((self.task and self.task.id) or self.request_id) or "image")
  local folder = dir:gsub("/+$", "")
  if folder == "" then folder = "/" else folder = folder .. "/" end
  local paths, taken, failed = {}, {}, nil
  for i, image in ipairs(self.images) do
    if image.error then
      failed = failed or image.error
    else
      local base = ("%s%s-%d"):format(folder, prefix, i)
      local tmp = temporary_name(base)
      local ok, err = stage(image, tmp, deadline)
      if not ok then
        err.saved = paths
        return nil, err
      end
      local _, ext = file.sniff(read_head(tmp))
      local path
      path, err = settle(tmp, base .. ext, may_replace)
      if not path then
        err.saved = paths
        return nil, err
      end
      paths[#paths + 1] = path
      if path ~= base .. ext then taken[#paths] = base .. ext end
    end
  end
  if failed then
    local n = 0
    for _, image in ipairs(self.images) do n = n + (image.error and 1 or 0) end
    return nil, errors.new(failed.kind, ("%d of %d images failed on the provider's side (first: %s); the others"
      .. " were saved"):format(n, #self.images, tostring(failed.message)), { code = failed.code,
      request_id = failed.request_id, saved = paths, advice = failed.advice })
  end
  return paths, taken
end

function Result:__tostring()
  return ("imgedit.result(%d image%s%s)"):format(#self.images, #self.images == 1 and "" or "s",
    self.profile_id and (", profile " .. self.profile_id) or "")
end

return result
