--- Results and their images.
--
-- A Result is what a finished operation returns; each of its images has a
-- `url` (on the provider's CDN) and/or `b64_json` (the image itself). Saving
-- writes to a temporary name beside the target and renames only once the image
-- is complete, so a failed download never leaves a truncated file behind.
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

local function temporary_name(path)
  return ("%s.part-%06x"):format(path, math.random(0, 0xFFFFFF))
end

local function io_error(message, path)
  return errors.new("io", message, { path = path })
end

--- Writes `bytes` to `path` in one go, or returns nil and an error.
local function write_file(path, bytes)
  local handle, problem = io.open(path, "wb")
  if not handle then return nil, io_error("cannot write " .. tostring(problem), path) end
  local ok, write_problem = handle:write(bytes)
  local closed, close_problem = handle:close()
  if not ok or not closed then
    os.remove(path)
    return nil, io_error(("cannot write %s: %s"):format(path, tostring(write_problem or close_problem)), path)
  end
  return true
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

local function check_download_url(client, url)
  local problem = transport.check_url(url, client.config.allow_http)
  -- the URL is the provider's, not the caller's: an unexpected answer
  if problem then
    return errors.new("decode", "the provider returned a result URL imgedit will not fetch: " .. problem,
      { advice = "report it to the provider; allow_http = true accepts plain http:// result hosts" })
  end
  return nil
end

--- Writes the image to `tmp`: downloaded (streamed, never held in memory)
-- or decoded. Returns true or nil and an error; `tmp` is gone on failure.
local function store(image, tmp, deadline)
  local client = client_of[image]
  if is_base64(image) then
    local blob, blob_err = usable_blob(image)
    if blob_err then return nil, blob_err end
    if blob then
      local ok, problem = blob:write(tmp)
      if not ok then
        os.remove(tmp)
        return nil, io_error(problem, tmp)
      end
      return true
    end
    local bytes, err = decode_b64(image)
    if not bytes then return nil, err end
    return write_file(tmp, bytes)
  end
  if not image.url then
    return nil, errors.new("decode", ("image %d has neither url nor b64_json"):format(image.index))
  end
  local refused = check_download_url(client, image.url)
  if refused then return nil, refused end
  local res, err = transport.request(client, {
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
  return true
end

local function finish(tmp, path)
  local ok, problem = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    return nil, io_error(("cannot move the image into place at %s: %s"):format(path, tostring(problem)), path)
  end
  return path
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
-- No API key is sent to the image's host. Returns `path`, or nil and an error;
-- nothing is left at `path` unless the image is complete.
-- @tparam string path
-- @tparam[opt] table opts `timeout`: seconds for the whole save, retries included
function Image:save(path, opts)
  params.check_self(self, Image, "image.save", "image")
  if type(path) ~= "string" then params.argerror(1, "save", "string", path) end
  local deadline = deadline_of(opts, "save", 2)
  if self.error then return nil, self.error end
  local tmp = temporary_name(path)
  local ok, err = store(self, tmp, deadline)
  if not ok then return nil, err end
  return finish(tmp, path)
end

--- The image's bytes, or nil and an error.
-- @tparam[opt] table opts `timeout`: seconds for the whole download
function Image:bytes(opts)
  params.check_self(self, Image, "image.bytes", "image")
  local deadline = deadline_of(opts, "bytes", 1)
  if self.error then return nil, self.error end
  if is_base64(self) then return decode_b64(self) end
  local client = client_of[self]
  local refused = check_download_url(client, self.url or "")
  if refused then return nil, refused end
  local res, err = transport.request(client, { method = "GET", url = self.url, download = true,
                                                   deadline = deadline })
  if not res then return nil, err end
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

--- Saves `image` as `base` plus the extension of its actual type; returns
-- the path, or nil and an error.
local function save_one(image, base, deadline)
  local tmp = temporary_name(base)
  local ok, err = store(image, tmp, deadline)
  if not ok then return nil, err end
  local blob = blob_of[image]
  local _, ext = file.sniff(blob and blob:sniff(16) or read_head(tmp))
  return finish(tmp, base .. (ext or ".bin"))
end

--- Saves every image into directory `dir` as `<prefix>-<n>.<ext>`, the
-- extension following the image's actual type. Returns the list of paths, or
-- nil and an error whose `saved` field lists the files already written. An
-- image the provider failed to make (`image.error`) does not stop the
-- others: they are all saved, then the first such error is returned.
-- @tparam string dir an existing directory
-- @tparam[opt] string prefix default: the task or request id, else "image"
-- @tparam[opt] table opts `timeout`: seconds for saving them all
function Result:save_all(dir, prefix, opts)
  params.check_self(self, Result, "result.save_all", "result")
  if type(dir) ~= "string" then params.argerror(1, "save_all", "string", dir) end
  if prefix ~= nil and type(prefix) ~= "string" then params.argerror(2, "save_all", "string", prefix) end
  local deadline = deadline_of(opts, "save_all", 3)
  -- a default prefix comes from the server: scrubbed of the key, as any name it gives
  prefix = safe_prefix(prefix or errors.scrub((self.task and self.task.id) or self.request_id) or "image")
  dir = dir:gsub("(.)/+$", "%1")
  local paths, failed = {}, nil
  for i, image in ipairs(self.images) do
    if image.error then
      failed = failed or image.error
    else
      local path, err = save_one(image, ("%s/%s-%d"):format(dir, prefix, i), deadline)
      if not path then
        err.saved = paths
        return nil, err
      end
      paths[#paths + 1] = path
    end
  end
  if failed then
    local n = 0
    for _, image in ipairs(self.images) do n = n + (image.error and 1 or 0) end
    return nil, errors.new(failed.kind, ("%d of %d images failed on the provider's side (first: %s); the others"
      .. " were saved"):format(n, #self.images, tostring(failed.message)), { code = failed.code,
      request_id = failed.request_id, saved = paths, advice = failed.advice })
  end
  return paths
end

function Result:__tostring()
  return ("imgedit.result(%d image%s%s)"):format(#self.images, #self.images == 1 and "" or "s",
    self.profile_id and (", profile " .. self.profile_id) or "")
end

return result
