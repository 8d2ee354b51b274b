-- The model catalogs: every documented model, each with its own rules,
-- checked against the emulator (which keeps its own copy of the rules).
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local FOX_SUBMIT = "/foxapi/v1/images/generations"
local PT_EDITS, PT_GENERATIONS = "/powertokens/v1/images/edits", "/powertokens/v1/images/generations"
local URL = "https://example.com/portrait.jpg"

--- A value the field accepts, built from its description alone.
local function sample(spec)
  if spec.variants then return sample(spec.variants[1]) end
  if spec.type == "string" then
    if spec.format == "url" or spec.format == "image" then return URL end
    if spec.format == "size" then return spec.presets and spec.presets[1] or "1024*1024" end
    if spec.choices then return spec.choices[1] end
    return "p"
  elseif spec.type == "integer" or spec.type == "number" then
    return spec.min or 1
  elseif spec.type == "boolean" then
    return true
  elseif spec.type == "array" then
    local list = {}
    for i = 1, spec.min_items or 1 do list[i] = sample(spec.items or { type = "string" }) end
    return list
  end
  return {}
end

local function fields_for(entry, op)
  local list = {}
  for _, f in ipairs(entry.fields) do
    local belongs = f.operations == nil
    for _, o in ipairs(f.operations or {}) do belongs = belongs or o == op end
    if belongs then list[#list + 1] = f end
  end
  return list
end

--- The smallest valid request of `entry` for `op`: its required fields.
local function minimal(entry, op)
  local input = { model = entry.name }
  for _, f in ipairs(fields_for(entry, op)) do
    if f.required then input[f.name] = sample(f) end
  end
  return input
end

local function with(input, name, value)
  local copy = {}
  for k, v in pairs(input) do copy[k] = v end
  copy[name] = value
  return copy
end

local function each_model_op(fn)
  for _, provider in ipairs(imgedit.providers()) do
    for _, entry in ipairs(assert(imgedit.models(provider))) do
      for _, op in ipairs(entry.operations) do fn(provider, entry, op) end
    end
  end
end

--- Cases just outside and just inside each documented bound of a field.
local function bounds(f)
  local out, inside = {}, {}
  local function case(label, value, ok) (ok and inside or out)[#(ok and inside or out) + 1] = { label, value } end
  if f.type == "integer" or f.type == "number" then
    local step = f.type == "integer" and 1 or 0.01
    if f.min then case("below min", f.min - step) case("at min", f.min, true) end
    if f.max then case("above max", f.max + step) case("at max", f.max, true) end
  elseif f.type == "string" and f.max_length then
    case("over max_length", ("é"):rep(f.max_length + 1))
    case("at max_length", ("é"):rep(f.max_length), true)
  elseif f.type == "string" and f.choices then
    case("not a choice", "no-such-choice")
    case("first choice", f.choices[1], true)
    case("last choice", f.choices[#f.choices], true)
  elseif f.type == "string" and f.format == "size" then
    for _, preset in ipairs(f.presets or {}) do case("preset " .. preset, preset, true) end
    if f.min_pixels then
      local side = math.floor(math.sqrt(f.min_pixels))
      case("below min_pixels", side .. "*" .. (side - 1))
      case("at min_pixels", side .. "x" .. side, true)
    end
    if f.max_pixels then
      local side = math.floor(math.sqrt(f.max_pixels))
      case("above max_pixels", side .. "*" .. (side + 1))
      case("at max_pixels", side .. "*" .. side, true)
    end
    case("malformed", "big")
  elseif f.type == "array" and f.items and f.items.format == "image" then
    if f.max_items then
      local over, at = {}, {}
      for i = 1, f.max_items + 1 do over[i] = URL end
      for i = 1, f.max_items do at[i] = URL end
      case("over max_items", over)
      case("at max_items", at, true)
    end
    if (f.min_items or 0) > 0 then case("empty", {}) end
  end
  return out, inside
end

describe("model catalogs", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.05 })
  end)

  local function client(provider, opts)
    if provider == "foxapi" then return helpers.fox(m, opts) end
    return helpers.pt(m, opts)
  end

  local function posts()
    local list = {}
    for _, r in ipairs(helpers.api_requests(m)) do
      if r.method == "POST" then list[#list + 1] = r end
    end
    return list
  end

  describe("imgedit.models", function()
    it("lists every documented model of both gateways as plain data", function()
      local names = {}
      for _, provider in ipairs(imgedit.providers()) do
        for _, entry in ipairs(assert(imgedit.models(provider))) do names[#names + 1] = entry.name end
      end
      assert.same({ "phota-image-edit", "phota-image", "phota-image-enhance", "phota-create-profile",
                    "wan-2.7-image", "wan-2.7-image-pro", "grok-imagine-image", "gemini-3-pro-image-preview",
                    "gemini-3.1-flash-image-preview", "qwen-image-2.0-pro", "wan2.7-image-pro" }, names)
      local function plain(v, path)
        assert(type(v) ~= "function" and type(v) ~= "userdata", path .. " is not plain data")
        if type(v) == "table" then
          assert.is_nil(getmetatable(v), path .. " has a metatable")
          for k, x in pairs(v) do plain(x, path .. "." .. tostring(k)) end
        end
      end
      plain(imgedit.models("foxapi"), "foxapi")
      plain(imgedit.models("powertokens"), "powertokens")
    end)

    it("says which operations each model serves and which model is each operation's default", function()
      local fox = assert(imgedit.models("foxapi"))
      local by_name = {}
      for _, e in ipairs(fox) do by_name[e.name] = e end
      assert.same({ "edit", "generate" }, by_name["wan-2.7-image"].operations)
      assert.same({ "edit" }, by_name["phota-image-edit"].default_for)
      assert.same({ "generate" }, by_name["phota-image"].default_for)
      assert.same({}, by_name["grok-imagine-image"].default_for)
      local qwen = assert(imgedit.models("powertokens"))[1]
      assert.same({ "edit", "generate" }, qwen.default_for)
      local prompt = qwen.fields[1]
      assert.same({ name = "prompt", type = "string", required = true, max_length = 800, into = "text",
                    doc = "what to make or change" }, prompt)
    end)

    it("is a copy: changing it changes nothing imgedit sends", function()
      local fox = assert(imgedit.models("foxapi"))
      fox[1].fields[1].max_length = 1
      assert(helpers.fox(m):edit({ prompt = "longer than one character", images = { URL } }))
    end)

    it("an unknown provider is invalid_request; a wrong type raises", function()
      local catalog, err = imgedit.models("dalle")
      assert.is_nil(catalog)
      assert.equal("invalid_request", err.kind)
      assert.matches('use "foxapi" or "powertokens"', err.message, 1, true)
      assert.has_error(function() imgedit.models(1) end, "bad argument #1 to 'models' (string expected, got number)")
    end)
  end)

  describe("the documentation", function()
    it("the README's model tables and meta.lua's model types are what the catalogs say", function()
      local catalog = dofile(helpers.ROOT .. "/tools/catalog.lua")
      assert.same({}, catalog.stale(helpers.ROOT), "run make catalog")
    end)

    it("no file of the library or the command outside the provider files names a provider or a model", function()
      local names = {}
      for _, provider in ipairs(imgedit.providers()) do
        names[#names + 1] = provider
        for _, entry in ipairs(assert(imgedit.models(provider))) do names[#names + 1] = entry.name end
      end
      local listing = helpers.run("cd " .. helpers.shell_quote(helpers.ROOT) .. " && find lua/imgedit -name '*.lua'")
      local checked = 0
      for path in listing:gmatch("[^\n]+") do
        -- the provider files, their emulators, and the types generated from the catalogs
        if not path:find("^lua/imgedit/providers/") and not path:find("^lua/imgedit/mock/")
            and path ~= "lua/imgedit/meta.lua" then
          checked = checked + 1
          local code = helpers.read(helpers.ROOT .. "/" .. path):gsub("%-%-[^\n]*", "")
          for _, name in ipairs(names) do
            assert.is_nil(code:find('"' .. name .. '"', 1, true), path .. " names " .. name)
            assert.is_nil(code:find("'" .. name .. "'", 1, true), path .. " names " .. name)
          end
        end
      end
      assert.is_true(checked >= 20)
    end)

    it("no file of the project refers to the team's notes outside it", function()
      local out = helpers.run("cd " .. helpers.shell_quote(helpers.ROOT)
        .. " && git ls-files | xargs grep -l -e '\\.\\./shared' -e 'PROVIDERS\\.md' -e '[^/]API\\.md' || true")
      assert.equal("", out)
    end)

    it("a stale section is detected", function()
      local catalog = dofile(helpers.ROOT .. "/tools/catalog.lua")
      local readme = helpers.read(helpers.ROOT .. "/README.md")
      local dir = helpers.tmpdir()
      os.execute("mkdir -p " .. dir .. "/lua/imgedit")
      helpers.write(dir .. "/README.md", (readme:gsub("`wan%-2%.7%-image%-pro` |", "`wan-2.7-image-prox` |")))
      helpers.write(dir .. "/lua/imgedit/meta.lua", helpers.read(helpers.ROOT .. "/lua/imgedit/meta.lua"))
      assert.same({ "README.md" }, catalog.stale(dir))
      helpers.rmdir(dir)
    end)
  end)

  describe("every model and operation", function()
    each_model_op(function(provider, entry, op)
      it(("%s %s with %s: its smallest valid request is accepted by the emulator"):format(provider, op,
        entry.name), function()
        local input = minimal(entry, op)
        local result, err = client(provider)[op](client(provider), input)
        assert(result, tostring(err))
        local sent = posts()
        assert.equal(1, #sent)
        assert.equal(entry.name, sent[1].json.model)
      end)
    end)
  end)

  describe("each documented bound", function()
    each_model_op(function(provider, entry, op)
      for _, f in ipairs(fields_for(entry, op)) do
        local outside, inside = bounds(f)
        for _, case in ipairs(outside) do
          it(("%s %s (%s): %s %s is refused with no request"):format(provider, op, entry.name, f.name, case[1]),
            function()
              local c = client(provider)
              local result, err = c[op](c, with(minimal(entry, op), f.name, case[2]))
              assert.is_nil(result)
              assert.equal("invalid_request", err.kind)
              assert.matches(f.name, err.message, 1, true)
              assert.matches(entry.name, err.message, 1, true)
              assert.equal(0, #m:requests())
            end)
        end
        for _, case in ipairs(inside) do
          it(("%s %s (%s): %s %s is sent and accepted"):format(provider, op, entry.name, f.name, case[1]),
            function()
              local c = client(provider)
              local result, err = c[op](c, with(minimal(entry, op), f.name, case[2]))
              assert(result, tostring(err))
              assert.equal(1, #posts())
            end)
        end
      end
    end)
  end)

  describe("the references' own examples", function()
    it("qwen-image-2.0-pro: the seed example sends exactly its body", function()
      assert(helpers.pt(m):edit({
        prompt = "Replace the background with a seaside sunset", images = { "https://example.com/source.webp" },
        response_format = "url", n = 2, size = "1536*1024", watermark = false, prompt_extend = true,
        negative_prompt = "low quality", seed = 0,
      }))
      assert.same({ model = "qwen-image-2.0-pro", response_format = "url",
                    input = { messages = { { role = "user", content = {
                      { image = "https://example.com/source.webp" },
                      { text = "Replace the background with a seaside sunset" } } } } },
                    n = 2, size = "1536*1024", watermark = false, prompt_extend = true,
                    negative_prompt = "low quality", seed = 0 }, posts()[1].json)
    end)

    it("wan2.7-image-pro edit: two images, size 2K, n 1, seed 0, watermark false, negative prompt", function()
      assert(helpers.pt(m):edit({
        model = "wan2.7-image-pro", response_format = "url",
        images = { "https://example.com/car.webp", "https://example.com/paint.webp" },
        prompt = "Spray the graffiti from image 2 onto the car in image 1",
        size = "2K", n = 1, watermark = false, negative_prompt = "Preserve original car body color", seed = 0,
      }))
      assert.same({ model = "wan2.7-image-pro", response_format = "url",
                    input = { messages = { { role = "user", content = {
                      { image = "https://example.com/car.webp" }, { image = "https://example.com/paint.webp" },
                      { text = "Spray the graffiti from image 2 onto the car in image 1" } } } } },
                    size = "2K", n = 1, watermark = false, negative_prompt = "Preserve original car body color",
                    seed = 0 }, posts()[1].json)
      assert.equal(PT_EDITS, posts()[1].path)
    end)

    it("wan2.7-image-pro generate: thinking_mode, size 2K", function()
      assert(helpers.pt(m):generate({ model = "wan2.7-image-pro", response_format = "url", prompt = "...",
                                      size = "2K", n = 1, watermark = false, thinking_mode = true, seed = 0 }))
      assert.same({ model = "wan2.7-image-pro", response_format = "url",
                    input = { messages = { { role = "user", content = { { text = "..." } } } } },
                    size = "2K", n = 1, watermark = false, thinking_mode = true, seed = 0 }, posts()[1].json)
      assert.equal(PT_GENERATIONS, posts()[1].path)
    end)

    local FOX_EXAMPLES = {
      { "edit", { prompt = "Change the background to a tropical beach at sunset", images = { URL },
                  n = 1, resolution = "1K" },
        { model = "phota-image-edit", prompt = "Change the background to a tropical beach at sunset",
          image_urls = { URL }, num_outputs = 1, resolution = "1K" } },
      { "generate", { prompt = "A portrait of a woman in a vintage library, soft natural light", n = 1,
                      resolution = "1K", aspect_ratio = "3:4" },
        { model = "phota-image", prompt = "A portrait of a woman in a vintage library, soft natural light",
          num_outputs = 1, resolution = "1K", aspect_ratio = "3:4" } },
      { "enhance", { image = "https://example.com/low-res-photo.jpg", resolution = "4K" },
        { model = "phota-image-enhance", image_url = "https://example.com/low-res-photo.jpg", resolution = "4K" } },
      { "create_profile", { archive = "https://example.com/face-photos.zip" },
        { model = "phota-create-profile", image_archive_url = "https://example.com/face-photos.zip" } },
      { "generate", { model = "wan-2.7-image", prompt = "A cinematic portrait of a traveler in neon rain", n = 1,
                      image_size = "portrait_4_3" },
        { model = "wan-2.7-image", prompt = "A cinematic portrait of a traveler in neon rain", num_outputs = 1,
          image_size = "portrait_4_3" } },
      { "edit", { model = "wan-2.7-image-pro", prompt = "Make it night", images = { URL, URL },
                  image_size = { width = 1280, height = 720 } },
        { model = "wan-2.7-image-pro", prompt = "Make it night", image_urls = { URL, URL }, num_outputs = 1,
          image_size = { width = 1280, height = 720 } } },
      { "generate", { model = "gemini-3-pro-image-preview", prompt = "...", aspect_ratio = "1:1", resolution = "1K" },
        { model = "gemini-3-pro-image-preview", prompt = "...", aspect_ratio = "1:1", resolution = "1K" } },
      { "generate", { model = "gemini-3.1-flash-image-preview", prompt = "A lighthouse", aspect_ratio = "8:1" },
        { model = "gemini-3.1-flash-image-preview", prompt = "A lighthouse", aspect_ratio = "8:1" } },
      { "generate", { model = "grok-imagine-image", prompt = "A red fox", n = 2, aspect_ratio = "19.5:9",
                      output_format = "png" },
        { model = "grok-imagine-image", prompt = "A red fox", num_outputs = 2, aspect_ratio = "19.5:9",
          output_format = "png" } },
      { "edit", { model = "grok-imagine-image", prompt = "Add a hat", images = { URL }, output_format = "webp" },
        { model = "grok-imagine-image", prompt = "Add a hat", image_urls = { URL }, num_outputs = 1,
          output_format = "webp" } },
    }
    for _, example in ipairs(FOX_EXAMPLES) do
      it(("foxapi %s: the %s example sends exactly its body"):format(example[1], example[3].model), function()
        local fox = helpers.fox(m)
        assert(fox[example[1]](fox, example[2]))
        local sent = posts()
        assert.equal(1, #sent)
        assert.equal(FOX_SUBMIT, sent[1].path)
        assert.same(example[3], sent[1].json)
      end)
    end
  end)

  describe("a value valid for one model and not another", function()
    it("size 2K: wan2.7-image-pro yes, qwen-image-2.0-pro no", function()
      assert(helpers.pt(m):edit({ model = "wan2.7-image-pro", prompt = "p", images = { URL }, size = "2K" }))
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { URL }, size = "2K" })
      assert.equal("invalid_request", err.kind)
      assert.matches("qwen-image-2.0-pro", err.message, 1, true)
      assert.equal(1, #posts())
    end)

    it("prompt_extend: qwen-image-2.0-pro yes, wan2.7-image-pro no", function()
      assert(helpers.pt(m):edit({ prompt = "p", images = { URL }, prompt_extend = true }))
      local _, err = helpers.pt(m):edit({ model = "wan2.7-image-pro", prompt = "p", images = { URL },
                                          prompt_extend = true })
      assert.equal("invalid_request", err.kind)
      assert.matches('unknown parameter "prompt_extend"', err.message, 1, true)
      assert.equal(1, #posts())
    end)

    it("bbox_list: wan2.7-image-pro edits only, one list per image", function()
      local boxes = { { { 0, 0, 10, 10 } }, {} }
      assert(helpers.pt(m):edit({ model = "wan2.7-image-pro", prompt = "p", images = { URL, URL },
                                  bbox_list = boxes }))
      assert.same(boxes[1], posts()[1].json.bbox_list[1])
      for _, refused in ipairs({
        { model = "wan2.7-image-pro", prompt = "p", images = { URL }, bbox_list = boxes },
        { model = "wan2.7-image-pro", prompt = "p", bbox_list = { {} }, op = "generate" },
        { prompt = "p", images = { URL }, bbox_list = { {} } },
      }) do
        local op = refused.op or "edit"
        refused.op = nil
        local pt = helpers.pt(m)
        local _, err = pt[op](pt, refused)
        assert.equal("invalid_request", err.kind)
        assert.matches("bbox_list", err.message, 1, true)
      end
      assert.equal(1, #posts())
    end)

    it("n: 1-6 for qwen, 1-4 for wan2.7-image-pro, 1-12 with enable_sequential", function()
      assert(helpers.pt(m):edit({ prompt = "p", images = { URL }, n = 6 }))
      local _, err = helpers.pt(m):edit({ model = "wan2.7-image-pro", prompt = "p", images = { URL }, n = 6 })
      assert.matches("n must be between 1 and 4, got 6", err.message, 1, true)
      assert(helpers.pt(m):generate({ model = "wan2.7-image-pro", prompt = "p", n = 12, enable_sequential = true }))
      _, err = helpers.pt(m):generate({ model = "wan2.7-image-pro", prompt = "p", n = 12 })
      assert.matches("n must be between 1 and 4, got 12", err.message, 1, true)
      assert.equal(2, #posts())
    end)

    it("wan-2.7-image: five outputs from text, at most four when editing; at most four images", function()
      assert(helpers.fox(m):generate({ model = "wan-2.7-image", prompt = "p", n = 5 }))
      local _, err = helpers.fox(m):edit({ model = "wan-2.7-image", prompt = "p", images = { URL }, n = 5 })
      assert.matches("n must be between 1 and 4, got 5", err.message, 1, true)
      _, err = helpers.fox(m):edit({ model = "wan-2.7-image", prompt = "p", images = { URL, URL, URL, URL, URL } })
      assert.matches("images has 5 items; the limit is 4", err.message, 1, true)
      _, err = helpers.fox(m):generate({ model = "wan-2.7-image", prompt = ("x"):rep(2001) })
      assert.matches("2001 characters long; the limit is 2000", err.message, 1, true)
      assert.equal(1, #posts())
    end)

    it("grok-imagine-image: aspect_ratio is for text to image only", function()
      local _, err = helpers.fox(m):edit({ model = "grok-imagine-image", prompt = "p", images = { URL },
                                           aspect_ratio = "1:1" })
      assert.matches('unknown parameter "aspect_ratio"', err.message, 1, true)
      _, err = helpers.fox(m):generate({ model = "grok-imagine-image", prompt = "p", num_outputs = 5 })
      assert.matches("num_outputs must be between 1 and 4, got 5", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("a model that does not serve the operation says which it serves", function()
      local _, err = helpers.fox(m):edit({ model = "phota-image", prompt = "p", images = { URL } })
      assert.equal("invalid_request", err.kind)
      assert.matches("phota-image does not do edit; it does generate", err.message, 1, true)
      _, err = helpers.fox(m):edit({ model = "gemini-3-pro-image-preview", prompt = "p", images = { URL } })
      assert.matches("it does generate", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("submit checks the model's own rules, as edit or generate by what is given", function()
      local fox = helpers.fox(m)
      assert(fox:submit({ model = "wan-2.7-image", prompt = "p", n = 5 }))
      assert(fox:submit({ model = "wan-2.7-image", prompt = "p", images = { URL } }))
      local _, err = fox:submit({ model = "wan-2.7-image", prompt = "p", images = { URL }, n = 5 })
      assert.matches("n must be between 1 and 4", err.message, 1, true)
      assert.equal(2, #posts())
    end)

    it("JSON null where the reference allows it", function()
      assert(helpers.fox(m):edit({ prompt = "p", images = { URL }, profile_ids = imgedit.null }))
      assert.equal(imgedit.null, posts()[1].json.profile_ids)
    end)
  end)

  describe("beyond the catalog, on purpose", function()
    local lines
    before_each(function()
      lines = {}
      imgedit.log(function(line) lines[#lines + 1] = line end)
    end)
    after_each(function() imgedit.log(nil) end)

    local function unvalidated_lines()
      local found = {}
      for _, line in ipairs(lines) do
        if line:find("unvalidated request", 1, true) then found[#found + 1] = line end
      end
      return found
    end

    it("extra is merged into the wire body after validation, and logged", function()
      assert(helpers.fox(m):generate({ model = "gemini-3-pro-image-preview", prompt = "p",
                                       extra = { image_urls = { URL } } }))
      assert.same({ model = "gemini-3-pro-image-preview", prompt = "p", image_urls = { URL } }, posts()[1].json)
      -- the emulator does not know these fields (it refuses them): they reached it as given
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { URL },
                                          extra = { new_flag = true, depth = { 1, 2 } } })
      assert.equal("api", err.kind)
      local body = posts()[2].json
      assert.equal(true, body.new_flag)
      assert.same({ 1, 2 }, body.depth)
      assert.equal("p", body.input.messages[1].content[2].text)
      assert.equal(2, #unvalidated_lines())
      assert.matches("extra", unvalidated_lines()[1], 1, true)
    end)

    it("extra may not name a field the model's schema knows, nor one imgedit builds", function()
      for _, extra in ipairs({ { n = 2 }, { num_outputs = 2 }, { model = "x" } }) do
        local _, err = helpers.fox(m):edit({ prompt = "p", images = { URL }, extra = extra })
        assert.equal("invalid_request", err.kind)
        assert.matches("extra.", err.message, 1, true)
      end
      local _, err = helpers.pt(m):edit({ prompt = "p", images = { URL }, extra = { input = {} } })
      assert.matches("extra.input cannot be set", err.message, 1, true)
      _, err = helpers.pt(m):edit({ prompt = "p", images = { URL }, extra = { f = function() end } })
      assert.matches("extra.f cannot be sent as JSON", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("a model outside the catalog is sent with the parameters as given, names mapped", function()
      local result, err = helpers.fox(m):edit({ model = "phota-image-edit-2", prompt = "p", images = { URL },
                                                n = 3, new_field = "x" })
      assert.is_nil(result)
      assert.equal("api", err.kind) -- the emulator does not know it either: it reached it
      assert.same({ model = "phota-image-edit-2", prompt = "p", image_urls = { URL }, num_outputs = 3,
                    new_field = "x" }, posts()[1].json)
      result, err = helpers.pt(m):edit({ model = "qwen-image-3", prompt = "p", images = { URL }, seed = 7 })
      assert.is_nil(result)
      assert.equal("api", err.kind)
      assert.same({ model = "qwen-image-3", seed = 7, input = { messages = { { role = "user",
        content = { { image = URL }, { text = "p" } } } } } }, posts()[2].json)
      assert.equal(2, #unvalidated_lines())
      assert.matches("not in the catalog", unvalidated_lines()[1], 1, true)
    end)

    it("a model outside the catalog still has its Lua types checked", function()
      local _, err = helpers.fox(m):edit({ model = "future", prompt = 42, images = { URL } })
      assert.equal("invalid_request", err.kind)
      assert.matches("prompt must be a string, got 42", err.message, 1, true)
      _, err = helpers.fox(m):edit({ model = "future", prompt = "p", images = URL })
      assert.matches("images must be an array", err.message, 1, true)
      _, err = helpers.fox(m):edit({ model = "future", prompt = "p", images = { URL }, n = 0 / 0 })
      assert.matches("NaN", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("strict_models refuses a model outside the catalog, naming the known ones, with no request", function()
      local _, err = helpers.fox(m, { strict_models = true }):edit({ model = "phota-x", prompt = "p",
                                                                     images = { URL } })
      assert.equal("invalid_request", err.kind)
      assert.matches('unknown model "phota-x"', err.message, 1, true)
      assert.matches('"phota-image-edit"', err.message, 1, true)
      _, err = helpers.pt(m, { strict_models = true }):edit({ model = "dall-e", prompt = "p", images = { URL } })
      assert.matches('"qwen-image-2.0-pro", "wan2.7-image-pro"', err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("body is sent as the exact JSON body: powertokens' flat form (Seedream, MiniMax)", function()
      local body = { model = "seedream-5-0-260128", prompt = "A cat", image = { URL, URL }, size = "2K", seed = -1,
                     sequential_image_generation = "disabled", response_format = "url" }
      local result = assert(helpers.pt(m):edit({ body = body, timeout = 30 }))
      assert.equal(1, #result.images)
      assert.same(body, posts()[1].json)
      assert.equal(PT_EDITS, posts()[1].path)
      body = { model = "image-01", prompt = "A fox", aspect_ratio = "16:9", n = 2, prompt_optimizer = true }
      result = assert(helpers.pt(m):generate({ body = body }))
      assert.equal(2, #result.images)
      assert.same(body, posts()[2].json)
      assert.equal(1, #unvalidated_lines() - 1)
    end)

    it("body with foxapi is submitted as given and waited for as usual", function()
      local result = assert(helpers.fox(m):edit({ body = { model = "wan-2.7-image", prompt = "p",
                                                            image_urls = { URL } } }))
      assert.equal(1, #result.images)
      assert.same({ model = "wan-2.7-image", prompt = "p", image_urls = { URL } }, posts()[1].json)
    end)

    it("only the per-call options may stand beside body", function()
      local _, err = helpers.pt(m):edit({ body = { model = "x" }, prompt = "p" })
      assert.equal("invalid_request", err.kind)
      assert.matches('"prompt" cannot stand beside it', err.message, 1, true)
      _, err = helpers.fox(m):edit({ body = "{}" })
      assert.matches("body must be a table", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("a billed body is never resent after a timeout, as any request", function()
      m:faults({ { kind = "stall", seconds = 3, times = 5 } })
      local _, err = helpers.pt(m, { timeout = 0.3 }):edit({ body = { model = "image-01", prompt = "p" } })
      assert.equal("timeout", err.kind)
      assert.equal(1, #posts())
    end)
  end)

  describe("answers and errors as documented", function()
    it("foxapi results as plain URL strings come back as images", function()
      m:config({ result_shape = "strings" })
      local result = assert(helpers.fox(m):edit({ prompt = "p", images = { URL }, n = 2 }))
      assert.equal(2, #result.images)
      assert.matches("^" .. m.cdn .. "/files/", result.images[2].url)
      assert.equal("string", type(result.raw.results[1]))
    end)

    it("foxapi results in the output shape come back as images", function()
      m:config({ result_shape = "output" })
      local result = assert(helpers.fox(m):generate({ prompt = "p", n = 3 }))
      assert.equal(3, #result.images)
    end)

    it("polls without task_info are read", function()
      m:config({ poll_task_info = false, task_delay = 0.2 })
      local result = assert(helpers.fox(m):edit({ prompt = "p", images = { URL } }))
      assert.equal("completed", result.task.status)
    end)

    it("a powertokens data[i] with its own error is an image with error; the others are kept", function()
      m:config({ failed_images = { 2 } })
      local dir = helpers.tmpdir()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { URL }, n = 3 }))
      assert.equal(3, #result.images)
      assert.is_nil(result.images[1].error)
      local failed = result.images[2]
      assert.equal("api", failed.error.kind)
      assert.equal("image_generation_failed", failed.error.code)
      local ok, err = failed:save(dir .. "/x.png")
      assert.is_nil(ok)
      assert.equal(failed.error, err)
      assert.is_nil(failed:bytes())
      local paths
      paths, err = result:save_all(dir, "job")
      assert.is_nil(paths)
      assert.matches("1 of 3 images failed", err.message, 1, true)
      assert.same({ dir .. "/job-1.png", dir .. "/job-3.png" }, err.saved)
      assert.same({ "job-1.png", "job-3.png" }, helpers.ls(dir))
      helpers.rmdir(dir)
    end)

    it("HTTP 403 is auth, saying the key lacks permission for the model", function()
      m:faults({ { status = 403, body = { error = { type = "permission_error",
        message = "this key may not use model wan-2.7-image-pro" } } } })
      local _, err = helpers.fox(m):generate({ model = "wan-2.7-image-pro", prompt = "p" })
      assert.equal("auth", err.kind)
      assert.equal(403, err.status)
      assert.matches("the API key lacks permission for model wan-2.7-image-pro", err.message, 1, true)
      assert.matches("allowed to use this model", tostring(err), 1, true)
      assert.equal(1, #posts())
    end)

    it("an error of type not_found_error is not_found", function()
      m:faults({ { status = 400, body = { error = { type = "not_found_error", message = "no such thing" } } } })
      local _, err = helpers.fox(m):task("task-unified-1-x"):refresh()
      assert.equal("not_found", err.kind)
    end)

    it("422 service_unavailable_error is not retried, and says a later submission may work", function()
      m:faults({ { status = 422, body = { error = { type = "service_unavailable_error", code = "model_not_supported",
        message = "no channel" } } } })
      local _, err = helpers.fox(m):edit({ prompt = "p", images = { URL } })
      assert.equal("api", err.kind)
      assert.is_true(err.retryable)
      assert.matches("submit it again later", tostring(err), 1, true)
      assert.equal(1, #posts())
    end)

    local CODES = {
      { "model_unavailable", true, "after a short delay" },
      { "content_policy_violation", false, "change the prompt" },
      { "generation_failed", true, "submit it again (billed again)" },
      { "timeout", true, "with simpler parameters" },
      { "invalid_image_url", false, "reachable" },
      { "file_too_large", false, "reduce it" },
      { "unsupported_format", false, "supported format" },
      { "resource_exhausted", true, "later" },
      { "quota_exceeded", false, "top up" },
    }
    for _, case in ipairs(CODES) do
      it(("a task failed with %s is task_failed, retryable = %s, with the reference's advice"):format(case[1],
        tostring(case[2])), function()
        m:config({ task_outcome = "failed", fail_code = case[1], fail_message = "it failed" })
        local _, err = helpers.fox(m):edit({ prompt = "p", images = { URL } })
        assert.equal("task_failed", err.kind)
        assert.equal(case[1], err.code)
        assert.equal(case[2], err.retryable)
        assert.matches(case[3], tostring(err), 1, true)
        assert.equal(1, #posts()) -- never resubmitted by imgedit
      end)
    end

    it("a task failed with an unknown code keeps the general advice", function()
      m:config({ task_outcome = "failed", fail_code = "brand_new_code" })
      local _, err = helpers.fox(m):edit({ prompt = "p", images = { URL } })
      assert.equal("task_failed", err.kind)
      assert.is_false(err.retryable)
      assert.matches("change the input and submit again", tostring(err), 1, true)
    end)
  end)
end)
