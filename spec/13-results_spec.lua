-- Results: saving images from the CDN or from base64, without leaking the key.
local cjson = require("cjson")
local core = require("imgedit.core")
local helpers = require("spec.helpers")
local hostile = require("spec.support.hostile")

local SEED_URL = "https://example.com/portrait.jpg"

describe("results", function()
  local m, dir

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.2 })
    dir = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(dir) end)

  describe("image:save", function()
    it("streams a URL image to disk byte-exactly, with no key sent to the CDN", function()
      local result = assert(helpers.fox(m):edit({ prompt = "p", images = { SEED_URL } }))
      local url = result.images[1].url
      local path = dir .. "/out.png"
      assert.equal(path, result.images[1]:save(path))
      local expected = helpers.fetch(url)
      assert.equal(expected, helpers.read(path))
      assert.equal("\137PNG\r\n\26\n", expected:sub(1, 8))
      assert.same({ "out.png" }, helpers.ls(dir))
      local downloads = m:requests({ listener = "cdn" })
      assert.is_true(#downloads >= 1)
      for _, request in ipairs(downloads) do
        assert.is_nil(request.headers["authorization"])
        for _, value in pairs(request.headers) do assert.is_nil(value:find(helpers.KEY, 1, true)) end
      end
    end)

    it("image:bytes returns the same bytes", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } }))
      assert.equal(helpers.fetch(result.images[1].url), result.images[1]:bytes())
    end)

    it("an expired result URL is not_found and leaves no file", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } }))
      m:faults({ { listener = "cdn", status = 404, times = 5 } })
      local path = dir .. "/gone.png"
      local ok, err = result.images[1]:save(path)
      assert.is_nil(ok)
      assert.equal("not_found", err.kind)
      assert.equal(404, err.status)
      assert.same({}, helpers.ls(dir))
    end)

    it("a directory that does not exist is an io error", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL },
        response_format = "b64_json" }))
      local ok, err = result.images[1]:save(dir .. "/no/such/dir/x.png")
      assert.is_nil(ok)
      assert.equal("io", err.kind)
    end)
  end)

  describe("result:save_all", function()
    it("saves every image with the extension of its type", function()
      local result = assert(helpers.fox(m):edit({ prompt = "p", images = { SEED_URL }, n = 3 }))
      local paths = assert(result:save_all(dir, "shoot"))
      assert.same({ dir .. "/shoot-1.png", dir .. "/shoot-2.png", dir .. "/shoot-3.png" }, paths)
      for i, path in ipairs(paths) do
        assert.equal(helpers.fetch(result.images[i].url), helpers.read(path))
      end
      assert.same({ "shoot-1.png", "shoot-2.png", "shoot-3.png" }, helpers.ls(dir))
    end)

    it("names files after the task by default", function()
      local result = assert(helpers.fox(m):edit({ prompt = "p", images = { SEED_URL } }))
      local paths = assert(result:save_all(dir))
      assert.same({ dir .. "/" .. result.task.id .. "-1.png" }, paths)
    end)

    it("writes base64 images from their decoded bytes, each with the extension of its type", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json",
        n = 2 }))
      local paths = assert(result:save_all(dir, "b64"))
      assert.same({ dir .. "/b64-1.png", dir .. "/b64-2.png" }, paths)
      for i, path in ipairs(paths) do
        local bytes = assert(result.images[i]:bytes())
        assert.is_true(bytes == helpers.read(path))
        assert.equal(result.images[i].b64_json, require("imgedit.core").base64_encode(bytes))
      end
      assert.same({ "b64-1.png", "b64-2.png" }, helpers.ls(dir))
      -- again: the bytes stay with the image as long as it lives
      assert.same(paths, assert(result:save_all(dir, "b64")))
    end)

    it("keeps an empty b64_json as it is: an image with nothing to save", function()
      m:faults({ { path = "/powertokens/v1/images/edits", status = 200,
        body = '{"created":1,"data":[{"b64_json":"","revised_prompt":"p"}]}' } })
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" }))
      assert.equal("", result.raw.data[1].b64_json)
      assert.is_nil(result.images[1].b64_json)
      local ok, err = result.images[1]:save(dir .. "/x.png")
      assert.is_nil(ok)
      assert.equal("decode", err.kind)
      assert.same({}, helpers.ls(dir))
    end)

    it("never writes outside its directory, whatever the prefix", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" }))
      local paths = assert(result:save_all(dir, "../../etc/evil"))
      assert.equal(1, #paths)
      assert.equal(dir .. "/", paths[1]:sub(1, #dir + 1))
      assert.is_nil(paths[1]:sub(#dir + 2):find("/", 1, true))
    end)
  end)

  describe("bytes that are not an image", function()
    local server

    setup(function() server = hostile.start() end)
    teardown(function() server:stop() end)
    before_each(function() server:reset() end)

    --- A powertokens result whose one image is `url`.
    local function result_with(url)
      m:faults({ { path = "/powertokens/v1/images/edits", status = 200,
        body = cjson.encode({ created = 1, data = { { url = url } } }) } })
      return assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } }))
    end

    --- Saves the image with save and with save_all; both must fail with a
    -- decode error that matches `pattern`, and leave the directory empty.
    local function refused(result, pattern)
      local ok, err = result.images[1]:save(dir .. "/x.png")
      assert.is_nil(ok)
      assert.equal("decode", err.kind)
      assert.matches(pattern, err.message)
      local paths, all_err = result:save_all(dir, "all")
      assert.is_nil(paths)
      assert.equal("decode", all_err.kind)
      assert.same({}, helpers.ls(dir))
      local bytes, bytes_err = result.images[1]:bytes()
      assert.is_nil(bytes)
      assert.equal("decode", bytes_err.kind)
      return err
    end

    it("an HTML page served with 200 for an image URL is a decode error, and nothing is kept", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } }))
      m:faults({ { listener = "cdn", kind = "html", status = 200, times = 10 } })
      local err = refused(result, "is not an image, served as text/html: it starts with \"<html><head><tit\"")
      assert.equal(200, err.status)
      assert.equal(result.images[1].url, err.url)
    end)

    it("bytes that are not an image are a decode error even under an image Content-Type", function()
      server:rules({ { path = "/img.png", headers = { { "Content-Type", "image/png" } },
        body = '{"error": "this link has expired"}' } })
      refused(result_with(server.url .. "/img.png"),
        'is not an image, served as image/png: it starts with "{"error": "this "')
    end)

    it("a text/* Content-Type is a decode error even when the bytes start like an image", function()
      server:rules({ { path = "/img.png", headers = { { "Content-Type", "text/plain; charset=utf-8" } },
        body_base64 = core.base64_encode(helpers.png(3)) } })
      refused(result_with(server.url .. "/img.png"), "is served as text/plain, not as an image")
    end)

    it("a base64 image that decodes to something else is a decode error", function()
      m:faults({ { path = "/powertokens/v1/images/edits", status = 200, body = cjson.encode({ created = 1,
        data = { { b64_json = core.base64_encode("<!doctype html><p>quota exceeded</p>") } } }) } })
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" }))
      refused(result, 'its b64_json is not an image: it starts with "<!doctype html><"')
    end)
  end)
end)
