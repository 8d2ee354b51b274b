-- powertokens (Qwen / Wan): one synchronous request returns the images.
local imgedit = require("imgedit")
local core = require("imgedit.core")
local mock_png = require("imgedit.mock.png")
local cjson = require("cjson")
local helpers = require("spec.helpers")

local EDITS = "/powertokens/v1/images/edits"
local SOURCE = "https://example.com/source.webp"

describe("powertokens", function()
  local m, dir

  setup(function()
    m = helpers.start_mock()
    dir = helpers.tmpdir()
  end)
  teardown(function()
    m:stop()
    helpers.rmdir(dir)
  end)
  before_each(function() m:reset() end)

  describe("edit (the seed flow)", function()
    it("sends the seed body exactly: seed 0 and watermark false kept, size as W*H, no parameters", function()
      local pt = helpers.pt(m)
      local result = assert(pt:edit({
        prompt = "Replace the background with a seaside sunset",
        images = { SOURCE },
        n = 2, size = "1536x1024", response_format = "url", watermark = false,
        prompt_extend = true, negative_prompt = "low quality", seed = 0,
      }))
      local posts = helpers.api_requests(m, EDITS)
      assert.equal(1, #posts)
      assert.same({
        model = "qwen-image-2.0-pro", response_format = "url",
        input = { messages = { { role = "user", content = {
          { image = SOURCE }, { text = "Replace the background with a seaside sunset" } } } } },
        n = 2, size = "1536*1024", watermark = false, prompt_extend = true,
        negative_prompt = "low quality", seed = 0,
      }, posts[1].json)
      assert.is_nil(posts[1].json.parameters)
      assert.equal("Bearer " .. helpers.KEY, posts[1].headers["authorization"])

      assert.equal(2, #result.images)
      assert.matches("^" .. m.cdn, result.images[1].url)
      assert.is_string(result.images[1].revised_prompt)
      assert.equal("qwen-image-2.0-pro", result.model)
      assert.is_number(result.created)
      assert.is_string(result.request_id)
    end)

    it("sends only model, input and what was given", function()
      assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE } }))
      assert.same({ model = "qwen-image-2.0-pro", input = { messages = { { role = "user", content = {
        { image = SOURCE }, { text = "p" } } } } } }, helpers.api_requests(m, EDITS)[1].json)
    end)

    it("returns b64_json images that save byte-exactly", function()
      -- large enough for the response to arrive in many pieces
      m:config({ image_bytes = 700000 })
      local pt = helpers.pt(m)
      local result = assert(pt:edit({ prompt = "p", images = { SOURCE }, response_format = "b64_json", n = 2 }))
      assert.equal(2, #result.images)
      local seq = helpers.api_requests(m, EDITS)[1].seq
      for i, image in ipairs(result.images) do
        assert.is_nil(image.url)
        -- what the emulator encoded into the response
        local served = mock_png.bytes(mock_png.image(("pt-%d-%d"):format(seq, i), 700000))
        local path = dir .. "/b64-" .. i .. ".png"
        assert.equal(path, image:save(path))
        local saved = helpers.read(path)
        assert.is_true(served == saved, "saved bytes differ from the emulator's image")
        assert.equal("\137PNG\r\n\26\n", saved:sub(1, 8))
        assert.is_true(served == image:bytes())
        assert.is_true(served == core.base64_decode(image.b64_json))
      end
      assert.equal(0, #m:requests({ listener = "cdn" }))
    end)

    describe("b64_json decoded by the core as it arrives", function()
      it("leaves placeholders in result.raw and gives image.b64_json back exactly as sent", function()
        local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE }, response_format = "b64_json",
          n = 3 }))
        local seq = helpers.api_requests(m, EDITS)[1].seq
        for i, image in ipairs(result.images) do
          assert.equal("imgedit-blob:" .. i, result.raw.data[i].b64_json)
          assert.is_nil(rawget(image, "b64_json")) -- not built until asked for
          -- the emulator splices png.base64 of each image into its JSON
          local sent = mock_png.base64(mock_png.bytes(mock_png.image(("pt-%d-%d"):format(seq, i), 4096)))
          assert.equal(sent, image.b64_json)
          assert.equal(sent, rawget(image, "b64_json")) -- then kept
          assert.equal(image.b64_json, image.b64_json)
          assert.equal(("imgedit.image(base64, %d characters)"):format(#sent), tostring(image))
        end
      end)

      it("undoes the \\/ escapes cjson writes, and \\n, \\r and \\u escapes", function()
        local bytes = {}
        for i = 0, 2999 do bytes[#bytes + 1] = string.char((i * 7 + 63) % 256) end
        bytes = "\137PNG\r\n\26\n" .. table.concat(bytes)
        local b64 = core.base64_encode(bytes)
        assert.is_truthy(b64:find("/", 1, true))
        local first = cjson.encode({ b64_json = b64 })
        assert.is_truthy(first:find("\\/", 1, true)) -- cjson escapes every '/'
        -- the same value wrapped in escaped line breaks, one character as \u00XX
        local wrapped = (b64:sub(1, 40) .. "\\n" .. b64:sub(41, 80) .. "\\r\\n  " .. "\\u00" ..
          ("%02x"):format(b64:byte(81)) .. b64:sub(82)):gsub("/", "\\/")
        local body = '{"created":1,"data":[' .. first .. ',{"b64_json" : "' .. wrapped .. '"}]}'
        m:faults({ { path = EDITS, status = 200, body = body } })
        local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE }, response_format = "b64_json" }))
        assert.equal(2, #result.images)
        for i, image in ipairs(result.images) do
          assert.equal("imgedit-blob:" .. i, result.raw.data[i].b64_json)
          assert.is_true(bytes == image:bytes())
          assert.equal(b64, image.b64_json)
          local path = dir .. "/escaped-" .. i .. ".png"
          assert.equal(path, image:save(path))
          assert.is_true(bytes == helpers.read(path))
        end
      end)

      it("detects invalid base64: a decode error, no file, and the text still readable", function()
        local good = core.base64_encode("\137PNG\r\n\26\n" .. ("pixels"):rep(100))
        local bad = good:sub(1, 100) .. "!*" .. good:sub(101)
        local body = cjson.encode({ created = 1, data = { { b64_json = bad }, { b64_json = good:sub(1, 41) },
          { b64_json = good } } })
        m:faults({ { path = EDITS, status = 200, body = body } })
        local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE }, response_format = "b64_json" }))
        local out = helpers.tmpdir()
        finally(function() helpers.rmdir(out) end)
        local ok, err = result.images[1]:save(out .. "/bad.png")
        assert.is_nil(ok)
        assert.equal("decode", err.kind)
        assert.equal("image 1: b64_json is not valid base64 (invalid base64 character at offset 100)", err.message)
        local _, bytes_err = result.images[1]:bytes()
        assert.equal(err.message, bytes_err.message)
        assert.equal(bad, result.images[1].b64_json)
        _, err = result.images[2]:save(out .. "/truncated.png")
        assert.equal("decode", err.kind)
        assert.matches("not valid base64 (truncated base64)", err.message, 1, true)
        local saved
        saved, err = result:save_all(out)
        assert.is_nil(saved)
        assert.equal("decode", err.kind)
        assert.same({}, err.saved)
        assert.same({}, helpers.ls(out))
        assert.equal(out .. "/x.png", result.images[3]:save(out .. "/x.png"))
        assert.same({ "x.png" }, helpers.ls(out))
      end)

      it("is not asked for URL results", function()
        local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE }, response_format = "url" }))
        assert.matches("^" .. m.cdn, result.images[1].url)
        assert.is_nil(result.images[1].b64_json)
      end)
    end)

    it("sends imgedit.file images as data: URIs of their bytes and type", function()
      local png = helpers.png(7)
      local path = dir .. "/input.png"
      helpers.write(path, png)
      assert(helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(path), SOURCE } }))
      local content = helpers.api_requests(m, EDITS)[1].json.input.messages[1].content
      assert.equal("data:image/png;base64," .. require("imgedit.core").base64_encode(png), content[1].image)
      assert.equal(SOURCE, content[2].image)
      assert.same({ text = "p" }, content[3])
    end)

    it("generate sends the prompt alone to /v1/images/generations", function()
      local result = assert(helpers.pt(m):generate({ prompt = "a lighthouse", size = "1024*1024" }))
      assert.equal(1, #result.images)
      assert.same({ model = "qwen-image-2.0-pro", size = "1024*1024", input = { messages = { { role = "user",
        content = { { text = "a lighthouse" } } } } } },
        helpers.api_requests(m, "/powertokens/v1/images/generations")[1].json)
    end)
  end)

  describe("validation", function()
    local long = string.rep("é", 801)
    local cases = {
      { "prompt missing", { images = { SOURCE } }, "prompt is required" },
      { "prompt over 800 characters", { prompt = long, images = { SOURCE } }, "801 characters long; the limit is 800" },
      { "images missing", { prompt = "p" }, "images is required" },
      { "image neither URL nor data URI", { prompt = "p", images = { "ftp://x/y.png" } }, "images [1]" },
      { "broken data URI", { prompt = "p", images = { "data:image/png;base64,@@" } }, "data:image/<type>;base64" },
      { "n above 6", { prompt = "p", images = { SOURCE }, n = 7 }, "n must be between 1 and 6" },
      { "size malformed", { prompt = "p", images = { SOURCE }, size = "big" }, 'size must look like "1536*1024"' },
      { "size too small", { prompt = "p", images = { SOURCE }, size = "256*256" }, "between 512*512 and 2048*2048" },
      { "size too large", { prompt = "p", images = { SOURCE }, size = "4096x4096" }, "between 512*512 and 2048*2048" },
      { "response_format", { prompt = "p", images = { SOURCE }, response_format = "png" }, "response_format" },
      { "negative_prompt over 500", { prompt = "p", images = { SOURCE }, negative_prompt = ("x"):rep(501) },
        "the limit is 500" },
      { "seed negative", { prompt = "p", images = { SOURCE }, seed = -1 }, "seed must be between 0 and 2147483647" },
      { "seed too large", { prompt = "p", images = { SOURCE }, seed = 2147483648 }, "seed must be between" },
      { "watermark not boolean", { prompt = "p", images = { SOURCE }, watermark = "no" }, "watermark must be true or" },
      { "prompt_extend not boolean", { prompt = "p", images = { SOURCE }, prompt_extend = 1 }, "prompt_extend" },
      { "top-level parameters", { prompt = "p", images = { SOURCE }, parameters = {} },
        'unknown parameter "parameters"' },
    }
    for _, case in ipairs(cases) do
      it("edit: " .. case[1] .. " is invalid_request and sends nothing", function()
        local result, err = helpers.pt(m):edit(case[2])
        assert.is_nil(result)
        assert.equal("invalid_request", err.kind)
        assert.matches(case[3], err.message, 1, true)
        assert.equal(0, #m:requests())
      end)
    end

    it("accepts the limits themselves", function()
      assert(helpers.pt(m):edit({ prompt = ("é"):rep(800), images = { SOURCE }, n = 6, size = "2048*2048",
        negative_prompt = ("x"):rep(500), seed = 2147483647 }))
      assert(helpers.pt(m):edit({ prompt = "p", images = { SOURCE }, size = "512x512" }))
      assert.equal(2, #helpers.api_requests(m, EDITS))
    end)

    it("a missing image file is an io error, and nothing is sent", function()
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(dir .. "/missing.png") } })
      assert.equal("io", err.kind)
      assert.matches("missing.png", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("an image file over 10 MiB is invalid_request", function()
      local path = dir .. "/huge.png"
      helpers.write(path, "\137PNG\r\n\26\n" .. ("\0"):rep(10 * 1024 * 1024))
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(path) } })
      assert.equal("invalid_request", err.kind)
      assert.matches("10 MiB", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("a file that is not an image needs its MIME type", function()
      local path = dir .. "/notes.txt"
      helpers.write(path, "hello")
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(path) } })
      assert.equal("invalid_request", err.kind)
      assert.matches("not a PNG, JPEG, WebP, GIF or BMP", err.message, 1, true)
      assert(helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(path, "image/png") } }))
    end)
  end)
end)
