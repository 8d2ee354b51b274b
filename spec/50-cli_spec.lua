-- The imgedit command, run as a child process against the emulator.
local cjson = require("cjson")
local socket = require("socket")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
local EDITS = "/powertokens/v1/images/edits"
local URL = "https://example.com/portrait.jpg"
local RUN_TIMEOUT = 60 -- seconds: no run of the command may take longer
local unpack = table.unpack or unpack

local quote = helpers.shell_quote

--- The shell words that run `imgedit args...` against emulator `m`, with the
-- emulator's URLs and key in the environment (`extra`: more variables;
-- false unsets one), and this process's module paths, so that the child
-- loads the same build.
local function command(m, args, extra)
  local env = {
    FOXAPI_API_KEY = helpers.KEY, POWERTOKENS_API_KEY = helpers.KEY,
    FOXAPI_BASE_URL = m and m.foxapi or false, POWERTOKENS_BASE_URL = m and m.powertokens or false,
    LUA_PATH = package.path, LUA_CPATH = package.cpath, IMGEDIT_LOG = false,
  }
  for k, v in pairs(extra or {}) do env[k] = v end
  local unset, set = {}, {}
  for k, v in pairs(env) do
    if v == false then unset[#unset + 1] = "-u " .. k else set[#set + 1] = k .. "=" .. quote(v) end
  end
  table.sort(unset)
  table.sort(set)
  local words = { "env", table.concat(unset, " "), table.concat(set, " "), helpers.LUA, "bin/imgedit" }
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  return table.concat(words, " ")
end

--- Runs the command; returns {status, out, err}.
local function run(m, args, extra)
  local out, err = os.tmpname(), os.tmpname()
  local p = assert(io.popen(("timeout -k 5 %d %s </dev/null >%s 2>%s; echo $?")
    :format(RUN_TIMEOUT, command(m, args, extra), quote(out), quote(err))))
  local status = tonumber(p:read("*a"):match("%d+"))
  p:close()
  local result = { status = status, out = helpers.read(out) or "", err = helpers.read(err) or "" }
  os.remove(out)
  os.remove(err)
  return result
end

local function lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = line end
  return list
end

local exists = helpers.exists

local function is_png(path)
  local data = helpers.read(path)
  return data ~= nil and data:sub(1, 8) == "\137PNG\r\n\26\n"
end

local function write_jobs(dir, jobs)
  local path = dir .. "/jobs.jsonl"
  local text = {}
  for i, job in ipairs(jobs) do text[i] = type(job) == "string" and job or cjson.encode(job) end
  helpers.write(path, table.concat(text, "\n") .. "\n")
  return path
end

local function count(text, plain)
  local n, start = 0, 1
  while true do
    local i, j = text:find(plain, start, true)
    if not i then return n end
    n, start = n + 1, j + 1
  end
end

--- A process is alive until it is gone or a zombie (nobody may reap it in
-- a container whose init does not).
local function alive(pid)
  local stat = helpers.read("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

local function wait_until(seconds, fn)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    local value = fn()
    if value then return value end
    socket.sleep(0.02)
  end
  return fn()
end

describe("imgedit command", function()
  local m, out, png_path

  setup(function()
    m = helpers.start_mock()
    png_path = os.tmpname()
    helpers.write(png_path, helpers.png(7))
  end)
  teardown(function()
    m:stop()
    os.remove(png_path)
  end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.3 })
    out = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(out) end)

  describe("help and usage errors", function()
    it("--help lists the commands, the environment and the exit statuses", function()
      local r = run(m, { "--help" })
      assert.equal(0, r.status)
      for _, word in ipairs({ "Usage: imgedit", "edit", "generate", "enhance", "task", "batch", "mock",
                              "FOXAPI_API_KEY", "POWERTOKENS_BASE_URL", "Exit status" }) do
        assert.matches(word, r.out, 1, true)
      end
    end)

    it("each command's --help shows its options", function()
      local expected = {
        edit = { "--provider", "--image", "--prompt", "-n", "--resolution", "--size", "--format", "--seed",
                 "--negative", "--output", "--json", "--progress", "--api-key", "--base-url", "Examples" },
        generate = { "--prompt", "--aspect-ratio", "--size", "--seed" },
        enhance = { "--image", "--creativity", "--resemblance" },
        task = { "<id>", "--wait", "--output" },
        batch = { "<file>", "--concurrency", "--retry-failed", ".imgedit-journal.jsonl", "--output" },
      }
      for name, words in pairs(expected) do
        local r = run(m, { name, "--help" })
        assert.equal(0, r.status, name)
        assert.matches("Usage: imgedit " .. name, r.out, 1, true)
        for _, word in ipairs(words) do assert.matches(word, r.out, 1, true) end
      end
      local r = run(m, { "mock", "--help" })
      assert.equal(0, r.status)
      for _, word in ipairs({ "usage: imgedit mock", "--host", "--port", "--delay", "--fail-rate", "--fault",
                              "--task-outcome" }) do
        assert.matches(word, r.out, 1, true)
      end
    end)

    it("--version prints the version", function()
      local r = run(m, { "--version" })
      assert.equal(0, r.status)
      assert.matches("^imgedit %S+", r.out)
    end)

    it("exits 2 with the usage and where to read more, sending nothing", function()
      local cases = {
        { args = {}, says = "a command is required", help = "imgedit --help" },
        { args = { "edit", "-i", URL }, says = "--prompt", help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p", "-i", URL, "--bogus" }, says = "--bogus", help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p", "-i", URL, "-n", "two" }, says = "-n must be a whole number",
          help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p" }, says = "at least one input image", help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p", "-i", URL, "--size", "1024x1024" },
          says = "--size is not an option of foxapi phota-image-edit", help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p", "-i", URL, "--size", "1024x1024" },
          says = "--size is taken by powertokens qwen-image-2.0-pro", help = "imgedit edit --help" },
        { args = { "edit", "--prompt", "p", "-i", URL, "--model", "wan2.7-image-pro", "-p", "powertokens",
                   "--prompt-extend", "true" }, says = "its options: --response-format, -n, --size",
          help = "imgedit edit --help" },
        { args = { "enhance", "-p", "powertokens", "-i", URL }, says = "enhance is not an operation of powertokens",
          help = "imgedit enhance --help" },
        { args = { "task" }, says = "missing argument 'id'", help = "imgedit task --help" },
        { args = { "frobnicate" }, says = "unknown command 'frobnicate'", help = "imgedit --help" },
      }
      for _, case in ipairs(cases) do
        local r = run(m, case.args)
        local name = table.concat(case.args, " ")
        assert.equal(2, r.status, name)
        assert.matches(case.says, r.err, 1, true)
        assert.matches(case.help, r.err, 1, true)
      end
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("refuses a local file for foxapi, saying what to do instead", function()
      local r = run(m, { "edit", "--prompt", "p", "-i", png_path, "-o", out })
      assert.equal(2, r.status)
      assert.matches("foxapi only takes public image URLs", r.err, 1, true)
      assert.matches("powertokens", r.err, 1, true)
      r = run(m, { "edit", "-p", "powertokens", "--prompt", "p", "-i", "/nonexistent/x.png" })
      assert.equal(2, r.status)
      assert.matches("neither an http(s) URL nor a readable file", r.err, 1, true)
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("a missing API key is a usage error naming the variable", function()
      local r = run(m, { "edit", "--prompt", "p", "-i", URL }, { FOXAPI_API_KEY = false })
      assert.equal(2, r.status)
      assert.matches("set FOXAPI_API_KEY", r.err, 1, true)
      assert.matches("--api-key", r.err, 1, true)
      r = run(m, { "edit", "--prompt", "p", "-i", URL, "--api-key", helpers.KEY, "-o", out },
        { FOXAPI_API_KEY = false })
      assert.equal(0, r.status, r.err)
    end)

    it("parameters the library refuses exit 2 and send nothing", function()
      local r = run(m, { "edit", "-p", "powertokens", "--prompt", "p", "-i", URL, "--size", "10x10" })
      assert.equal(2, r.status)
      assert.matches("invalid_request", r.err, 1, true)
      assert.matches("size", r.err, 1, true)
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("a refused base URL says how to fix it", function()
      local r = run(m, { "edit", "--prompt", "p", "-i", URL, "--base-url", "http://192.0.2.1" })
      assert.equal(2, r.status)
      assert.matches("--allow-http", r.err, 1, true)
      assert.matches("FOXAPI_BASE_URL", r.err, 1, true)
    end)
  end)

  describe("edit, generate and enhance", function()
    it("foxapi edit submits once, waits and saves the images, printing their paths", function()
      local r = run(m, { "edit", "-i", URL, "--prompt", "Beach at sunset", "-n", "2", "--resolution", "4K",
                         "-o", out })
      assert.equal(0, r.status, r.err)
      local posts = helpers.api_requests(m, SUBMIT)
      assert.equal(1, #posts)
      assert.same({ model = "phota-image-edit", prompt = "Beach at sunset", image_urls = { URL }, num_outputs = 2,
                    resolution = "4K" }, posts[1].json)
      local paths = lines(r.out)
      assert.equal(2, #paths)
      for _, path in ipairs(paths) do
        assert.matches("^" .. out:gsub("%p", "%%%0") .. "/task%-[%w-]+%-%d%.png$", path)
        assert.is_true(is_png(path))
      end
    end)

    it("powertokens edit sends a local file as a data: URI, with size, seed and negative prompt", function()
      local r = run(m, { "edit", "-p", "powertokens", "-i", png_path, "--prompt", "Seaside", "--size", "1024x1024",
                         "--seed", "7", "--negative", "blur", "--format", "b64_json", "--name", "sunset", "-o", out })
      assert.equal(0, r.status, r.err)
      local posts = helpers.api_requests(m, EDITS)
      assert.equal(1, #posts)
      local body = posts[1].json
      assert.equal("1024*1024", body.size)
      assert.equal(7, body.seed)
      assert.equal("blur", body.negative_prompt)
      assert.equal("b64_json", body.response_format)
      local content = body.input.messages[1].content
      assert.matches("^data:image/png;base64,", content[1].image)
      assert.equal("Seaside", content[2].text)
      assert.same({ out .. "/sunset-1.png" }, lines(r.out))
      assert.is_true(is_png(out .. "/sunset-1.png"))
    end)

    it("generate and enhance send their models", function()
      local r = run(m, { "generate", "--prompt", "A red fox", "--aspect-ratio", "16:9", "-o", out })
      assert.equal(0, r.status, r.err)
      r = run(m, { "generate", "-p", "powertokens", "--prompt", "A red fox", "--seed", "3", "-o", out })
      assert.equal(0, r.status, r.err)
      r = run(m, { "enhance", "-i", URL, "--resemblance", "0.5", "-o", out })
      assert.equal(0, r.status, r.err)
      local posts = helpers.api_requests(m, SUBMIT)
      assert.same({ model = "phota-image", prompt = "A red fox", aspect_ratio = "16:9", num_outputs = 1,
                    resolution = "1K" }, posts[1].json)
      assert.same({ model = "phota-image-enhance", image_url = URL, resemblance = 0.5 }, posts[2].json)
      local gen = helpers.api_requests(m, "/powertokens/v1/images/generations")
      assert.equal(1, #gen)
      assert.equal(3, gen[1].json.seed)
      assert.equal(3, #helpers.ls(out))
    end)

    it("--json prints one JSON object", function()
      local r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out, "--json" })
      assert.equal(0, r.status, r.err)
      local list = lines(r.out)
      assert.equal(1, #list)
      local value = cjson.decode(list[1])
      assert.is_true(value.ok)
      assert.equal("foxapi", value.provider)
      assert.matches("^task%-", value.task_id)
      assert.equal(1, #value.files)
      assert.is_true(exists(value.files[1]))
      assert.matches("^" .. m.cdn, value.urls[1])
    end)

    it("logs plain lines when standard error is not a terminal, and nothing with --progress none", function()
      local r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out })
      assert.equal(0, r.status)
      assert.matches("imgedit: edit: submitted task task%-[%w-]+", r.err)
      assert.matches("imgedit: edit: completed in [%d.]+s: ", r.err)
      assert.is_nil(r.err:find("\27", 1, true))
      assert.is_nil(r.err:find("\r", 1, true))
      r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out, "--progress", "none" })
      assert.equal(0, r.status)
      assert.equal("", r.err)
    end)

    it("a failed task exits 1 and says what to do; with --json the error is in the object", function()
      m:config({ task_outcome = "failed", fail_message = "the image shows no face" })
      local r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out, "--json" })
      assert.equal(1, r.status)
      assert.matches("task_failed: task task%-[%w-]+ failed: the image shows no face", r.err)
      assert.matches("the generation failed: submit it again (billed again)", r.err, 1, true)
      local value = cjson.decode(lines(r.out)[1])
      assert.is_false(value.ok)
      assert.equal("task_failed", value.error.kind)
      assert.matches("^task%-", value.error.task_id)
      assert.same({}, helpers.ls(out))
    end)

    it("an API error exits 1 with the provider's message and advice", function()
      m:faults({ { path = SUBMIT, status = 402 } })
      local r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out })
      assert.equal(1, r.status)
      assert.matches("imgedit: quota:", r.err, 1, true)
      assert.matches("top up", r.err, 1, true)
    end)

    it("a wait that times out exits 1 and tells how to follow the task", function()
      m:config({ task_delay = 5 })
      local r = run(m, { "edit", "-i", URL, "--prompt", "p", "-o", out, "--timeout", "0.4" })
      assert.equal(1, r.status)
      local id = m:tasks()[1].id
      assert.matches("imgedit task " .. id:gsub("%p", "%%%0") .. " %-%-wait %-o ", r.err)
    end)
  end)

  describe("models, --model and --set", function()
    it("imgedit models lists every catalog model with its operations and fields", function()
      local r = run(m, { "models" })
      assert.equal(0, r.status, r.err)
      for _, word in ipairs({ "phota-image-edit  (edit; default for edit)", "wan-2.7-image  (edit, generate)",
                              "grok-imagine-image", "gemini-3.1-flash-image-preview", "wan2.7-image-pro",
                              "integer 1-4; default 1  [wire num_outputs; edit only]",
                              "bbox_list", "string; at most 800 characters  [required]" }) do
        assert.matches(word, r.out, 1, true)
      end
      r = run(m, { "models", "-p", "powertokens", "--json" })
      assert.equal(0, r.status, r.err)
      local list = lines(r.out)
      assert.equal(1, #list)
      local value = cjson.decode(list[1])
      assert.equal("powertokens", value.provider)
      assert.equal("qwen-image-2.0-pro", value.models[1].name)
      assert.equal(800, value.models[1].fields[1].max_length)
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("--model picks any catalog model, with that model's own options", function()
      local r = run(m, { "edit", "--model", "wan-2.7-image", "-i", URL, "-i", URL, "--prompt", "p", "-n", "2",
                         "--image-size", "landscape_16_9", "-o", out })
      assert.equal(0, r.status, r.err)
      assert.same({ model = "wan-2.7-image", prompt = "p", image_urls = { URL, URL }, num_outputs = 2,
                    image_size = "landscape_16_9" }, helpers.api_requests(m, SUBMIT)[1].json)
      assert.equal(2, #lines(r.out))
      r = run(m, { "generate", "-p", "powertokens", "--model", "wan2.7-image-pro", "--prompt", "p",
                   "--size", "4K", "--watermark", "false", "-o", out })
      assert.equal(0, r.status, r.err)
      local body = helpers.api_requests(m, "/powertokens/v1/images/generations")[1].json
      assert.equal("4K", body.size)
      assert.equal(false, body.watermark)
    end)

    it("a usage error names the values the chosen model takes, and nothing is sent", function()
      local r = run(m, { "edit", "--model", "wan-2.7-image", "-i", URL, "--prompt", "p", "--image-size", "huge" })
      assert.equal(2, r.status)
      assert.matches("image_size must be one of", r.err, 1, true)
      assert.matches("square_hd", r.err, 1, true)
      r = run(m, { "generate", "--model", "grok-imagine-image", "--prompt", "p", "-n", "9" })
      assert.equal(2, r.status)
      assert.matches("n must be between 1 and 4, got 9", r.err, 1, true)
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("--set checks a parameter the model has and sends any other through extra", function()
      local r = run(m, { "edit", "-p", "powertokens", "--model", "wan2.7-image-pro", "-i", URL, "--prompt", "p",
                         "--set", "bbox_list=[[[0,0,10,10]]]", "-o", out })
      assert.equal(0, r.status, r.err)
      assert.same({ { { 0, 0, 10, 10 } } }, helpers.api_requests(m, EDITS)[1].json.bbox_list)
      r = run(m, { "edit", "-p", "powertokens", "--model", "wan2.7-image-pro", "-i", URL, "--prompt", "p",
                   "--set", "bbox_list=[[1]]" })
      assert.equal(2, r.status)
      assert.matches("bbox_list [1] [1] must be an array", r.err, 1, true)
      r = run(m, { "generate", "--model", "gemini-3-pro-image-preview", "--prompt", "p",
                   "--set", 'image_urls=["' .. URL .. '"]', "--set", 'resolution="2K"', "-o", out })
      assert.equal(0, r.status, r.err)
      assert.same({ model = "gemini-3-pro-image-preview", prompt = "p", image_urls = { URL }, resolution = "2K" },
        helpers.api_requests(m, SUBMIT)[1].json)
      r = run(m, { "edit", "-i", URL, "--prompt", "p", "--set", "seed=notjson" })
      assert.equal(2, r.status)
      assert.matches("the value is not JSON", r.err, 1, true)
      assert.equal(2, #helpers.api_requests(m, "/v1/images/"))
    end)

    it("--model outside the catalog is sent as given", function()
      local r = run(m, { "edit", "--model", "phota-image-edit-2", "-i", URL, "--prompt", "p", "-n", "2",
                         "--set", "style=\"vivid\"", "-o", out })
      assert.equal(1, r.status) -- the emulator does not know it either
      assert.same({ model = "phota-image-edit-2", prompt = "p", image_urls = { URL }, num_outputs = 2,
                    style = "vivid" }, helpers.api_requests(m, SUBMIT)[1].json)
    end)

    it("create_profile prints the profile id", function()
      local r = run(m, { "create_profile", "--archive", "https://example.com/faces.zip", "-o", out })
      assert.equal(0, r.status, r.err)
      assert.matches("^profile_", r.out)
      assert.same({ model = "phota-create-profile", image_archive_url = "https://example.com/faces.zip" },
        helpers.api_requests(m, SUBMIT)[1].json)
    end)

    it("a batch line may carry model and extra, checked by the library before anything is sent", function()
      local jobs_dir = helpers.tmpdir()
      local good = {
        { id = "w", model = "wan-2.7-image", op = "generate", prompt = "p", n = 3 },
        { id = "g", model = "gemini-3-pro-image-preview", op = "generate", prompt = "p",
          extra = { image_urls = { URL } } },
      }
      local jobs = write_jobs(jobs_dir, { good[1], good[2],
        { id = "bad", model = "grok-imagine-image", op = "generate", prompt = "p", n = 5 } })
      local r = run(m, { "batch", jobs, "-o", out })
      assert.equal(2, r.status, r.out .. r.err)
      assert.matches("line 3", r.err, 1, true)
      assert.matches("n must be between 1 and 4", r.err, 1, true)
      assert.equal(0, #helpers.api_requests(m))
      jobs = write_jobs(jobs_dir, good)
      r = run(m, { "batch", jobs, "-o", out })
      helpers.rmdir(jobs_dir)
      assert.equal(0, r.status, r.out .. r.err)
      local posts = helpers.api_requests(m, SUBMIT)
      assert.equal(2, #posts)
      local by_model = {}
      for _, p in ipairs(posts) do by_model[p.json.model] = p.json end
      assert.same({ model = "wan-2.7-image", prompt = "p", num_outputs = 3 }, by_model["wan-2.7-image"])
      assert.same({ model = "gemini-3-pro-image-preview", prompt = "p", image_urls = { URL } },
        by_model["gemini-3-pro-image-preview"])
      for _, name in ipairs({ "w-1.png", "w-2.png", "w-3.png", "g-1.png" }) do
        assert.is_true(is_png(out .. "/" .. name), name)
      end
    end)
  end)

  describe("task", function()
    it("shows a task's state, waits for it and saves its images, without submitting", function()
      m:config({ task_delay = 0.6 })
      local task = assert(helpers.fox(m):submit({ prompt = "p", images = { URL } }))
      local r = run(m, { "task", task.id })
      assert.equal(0, r.status, r.err)
      assert.matches("^" .. task.id:gsub("%p", "%%%0") .. "  %a+  %d+%%", r.out)
      assert.matches("imgedit task " .. task.id:gsub("%p", "%%%0") .. " %-%-wait", r.out)
      r = run(m, { "task", task.id, "--wait", "-o", out })
      assert.equal(0, r.status, r.err)
      assert.same({ out .. "/" .. task.id .. "-1.png" }, lines(r.out))
      r = run(m, { "task", task.id, "--json" })
      local value = cjson.decode(r.out)
      assert.equal("completed", value.status)
      assert.equal(100, value.progress)
      assert.matches("^" .. m.cdn, value.urls[1])
      assert.equal(1, #helpers.api_requests(m, SUBMIT))
    end)

    it("exits 1 for an unknown or failed task", function()
      local r = run(m, { "task", "task-unified-0-nope" })
      assert.equal(1, r.status)
      assert.matches("not_found", r.err, 1, true)
      assert.matches("check the task id", r.err, 1, true)
      m:config({ task_delay = 0, task_outcome = "failed" })
      local task = assert(helpers.fox(m):submit({ prompt = "p", images = { URL } }))
      r = run(m, { "task", task.id })
      assert.equal(1, r.status)
      assert.matches("failed", r.out, 1, true)
      assert.matches("submit it again", r.err, 1, true)
    end)
  end)

  describe("batch", function()
    local jobs_dir

    before_each(function() jobs_dir = helpers.tmpdir() end)
    after_each(function() helpers.rmdir(jobs_dir) end)

    it("runs the jobs concurrently; a failed job stops no other; a summary ends it", function()
      m:config({ task_delay = 1 })
      local jobs = write_jobs(jobs_dir, {
        { id = "beach", prompt = "Beach", images = { URL } },
        { op = "generate", prompt = "A red fox", n = 2 },
        { id = "bad", prompt = "p", images = { URL }, n = 99 },
        { id = "local", provider = "powertokens", prompt = "Seaside", images = { png_path }, size = "1024x1024" },
        { id = "enh", op = "enhance", image = URL },
      })
      local r = run(m, { "batch", jobs, "-o", out, "--concurrency", "5" })
      assert.equal(1, r.status)
      for _, name in ipairs({ "beach-1.png", "jobs-2-1.png", "jobs-2-2.png", "local-1.png", "enh-1.png" }) do
        assert.is_true(is_png(out .. "/" .. name), name)
      end
      assert.matches("5 jobs in [%d.]+s: 4 completed, 0 skipped %(outputs exist%), 1 failed", r.out)
      assert.matches("failed bad (line 3): imgedit: api:", r.out, 1, true)
      assert.matches("fix line 3 of the jobs file", r.out, 1, true)
      assert.matches("beach: " .. out .. "/beach-1.png", r.out, 1, true)
      -- concurrently: every foxapi task was submitted before any was polled
      -- (the order of the emulator's log, not durations)
      local tasks = m:tasks()
      assert.equal(3, #tasks)
      local last_submit, first_poll = 0, math.huge
      for i, request in ipairs(helpers.api_requests(m, "/foxapi/")) do
        if request.method == "POST" then last_submit = i end
        if request.method == "GET" then first_poll = math.min(first_poll, i) end
      end
      assert.is_true(last_submit < first_poll, "a task was polled before every job was submitted")
      -- the journal has every submitted task id
      local journal = helpers.read(out .. "/.imgedit-journal.jsonl")
      for _, t in ipairs(tasks) do assert.matches(t.id, journal, 1, true) end
    end)

    it("skips the jobs whose outputs exist when run again", function()
      local jobs = write_jobs(jobs_dir, {
        { id = "a", prompt = "p1", images = { URL } },
        { id = "b", provider = "powertokens", prompt = "p2", images = { URL } },
      })
      assert.equal(0, run(m, { "batch", jobs, "-o", out }).status)
      assert.equal(2, #helpers.api_requests(m, "/v1/images/"))
      local r = run(m, { "batch", jobs, "-o", out })
      assert.equal(0, r.status, r.err)
      assert.matches("0 completed, 2 skipped", r.out, 1, true)
      assert.equal(2, #helpers.api_requests(m, "/v1/images/"))
      -- without a journal, by the files' names
      os.remove(out .. "/.imgedit-journal.jsonl")
      r = run(m, { "batch", jobs, "-o", out })
      assert.matches("2 skipped", r.out, 1, true)
      assert.equal(2, #helpers.api_requests(m, "/v1/images/"))
    end)

    it("checks every line first: a bad line exits 2 naming it, and nothing is sent", function()
      local cases = {
        { lines = { '{"prompt": "p", "images": ["' .. URL .. '"]}', "{not json" },
          says = "line 2 is not a JSON object" },
        { lines = { '{"id": "x", "prompt": "p", "images": ["' .. URL .. '"]}',
                    '{"id": "x", "prompt": "q", "images": ["' .. URL .. '"]}' }, says = "also used on line 1" },
        { lines = { '{"provider": "nope", "prompt": "p"}' }, says = "unknown provider" },
        { lines = { '{"prompt": "p", "images": ["' .. png_path .. '"]}' }, says = "foxapi only takes public" },
        { lines = { "", "# nothing" }, says = "has no jobs" },
      }
      for _, case in ipairs(cases) do
        local jobs = write_jobs(jobs_dir, case.lines)
        local r = run(m, { "batch", jobs, "-o", out })
        assert.equal(2, r.status, case.says)
        assert.matches(case.says, r.err, 1, true)
      end
      local r = run(m, { "batch", jobs_dir .. "/missing.jsonl" })
      assert.equal(2, r.status)
      assert.matches("cannot read the jobs file", r.err, 1, true)
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("--json prints one object per job and a summary", function()
      local jobs = write_jobs(jobs_dir, {
        { id = "a", prompt = "p1", images = { URL } },
        { id = "b", prompt = "p2", images = { URL }, n = 99 },
      })
      local r = run(m, { "batch", jobs, "-o", out, "--json" })
      assert.equal(1, r.status)
      local by_job, summary = {}, nil
      for _, line in ipairs(lines(r.out)) do
        local value = cjson.decode(line)
        if value.summary then summary = value.summary else by_job[value.job] = value end
      end
      assert.is_true(by_job.a.ok)
      assert.equal(out .. "/a-1.png", by_job.a.files[1])
      assert.is_false(by_job.b.ok)
      assert.equal("api", by_job.b.error.kind)
      assert.same({ completed = 1, failed = 1, skipped = 0, jobs = 2, resumed = 0 },
        { completed = summary.completed, failed = summary.failed, skipped = summary.skipped, jobs = summary.jobs,
          resumed = summary.resumed })
    end)

    it("killed mid-way and started again, resumes its tasks: every job is submitted once", function()
      m:config({ task_delay = 2 })
      local specs = {}
      for i = 1, 4 do specs[i] = { id = "k" .. i, prompt = "p" .. i, images = { URL } } end
      local jobs = write_jobs(jobs_dir, specs)
      local args = { "batch", jobs, "-o", out, "--concurrency", "2" }
      local p = assert(io.popen(command(m, args) .. " </dev/null >/dev/null 2>&1 & echo $!"))
      local pid = tonumber(p:read("*a"):match("%d+"))
      p:close()
      local journal = out .. "/.imgedit-journal.jsonl"
      -- the two running jobs' task ids are journaled (the other two wait for a free slot)
      local submitted = wait_until(15, function()
        local n = count(helpers.read(journal) or "", '"event":"submitted"')
        return n >= 2 and n
      end)
      os.execute("kill -9 " .. pid)
      assert.equal(2, submitted)
      assert.is_true(wait_until(5, function() return not alive(pid) end))
      assert.equal(2, #helpers.api_requests(m, SUBMIT))
      -- no image yet; the journal, and the gallery (of queued and running jobs)
      assert.same({ ".imgedit-gallery", ".imgedit-journal.jsonl", "index.html" }, helpers.ls(out))

      local r = run(m, args)
      assert.equal(0, r.status, r.err)
      assert.matches("4 completed (2 resumed)", r.out, 1, true)
      assert.matches("resuming 2 tasks", r.err, 1, true)
      local per_prompt = {}
      for _, post in ipairs(helpers.api_requests(m, SUBMIT)) do
        per_prompt[post.json.prompt] = (per_prompt[post.json.prompt] or 0) + 1
      end
      assert.same({ p1 = 1, p2 = 1, p3 = 1, p4 = 1 }, per_prompt)
      for i = 1, 4 do assert.is_true(is_png(("%s/k%d-1.png"):format(out, i))) end
    end)

    it("polls a failed task again rather than paying twice, unless --retry-failed", function()
      m:config({ task_delay = 0, task_outcome = "failed" })
      local jobs = write_jobs(jobs_dir, { { id = "f", prompt = "p", images = { URL } } })
      local r = run(m, { "batch", jobs, "-o", out })
      assert.equal(1, r.status)
      assert.matches("--retry-failed", r.out, 1, true)
      r = run(m, { "batch", jobs, "-o", out })
      assert.equal(1, r.status)
      assert.equal(1, #helpers.api_requests(m, SUBMIT))
      m:config({ task_outcome = "completed" })
      r = run(m, { "batch", jobs, "-o", out, "--retry-failed" })
      assert.equal(0, r.status, r.out .. r.err)
      assert.equal(2, #helpers.api_requests(m, SUBMIT))
      assert.is_true(is_png(out .. "/f-1.png"))
    end)

    it("a changed line is a new job, not a resumed one", function()
      local jobs = write_jobs(jobs_dir, { { id = "c", prompt = "first", images = { URL } } })
      assert.equal(0, run(m, { "batch", jobs, "-o", out }).status)
      write_jobs(jobs_dir, { { id = "c", prompt = "second", images = { URL } } })
      local r = run(m, { "batch", jobs, "-o", out })
      assert.equal(0, r.status, r.err)
      local posts = helpers.api_requests(m, SUBMIT)
      assert.equal(2, #posts)
      assert.equal("second", posts[2].json.prompt)
    end)
  end)

  describe("imgedit mock", function()
    --- Starts `imgedit mock args...`; returns its ready line and a stop function.
    local function start(args)
      local ready = os.tmpname()
      local words = { "--port", "0", "--cdn-port", "0", "--exit-on-eof" }
      for _, a in ipairs(args) do words[#words + 1] = a end
      local proc = assert(io.popen(command(nil, { "mock", unpack(words) })
        .. " >" .. quote(ready) .. " 2>/dev/null", "w"))
      local line = wait_until(10, function() return (helpers.read(ready) or ""):match("^([^\n]*)\n") end)
      os.remove(ready)
      assert(line, "imgedit mock did not start")
      return cjson.decode(line), function() proc:close() end
    end

    it("serves both APIs on loopback with --delay, --fail-rate and --fault", function()
      local info, stop = start({ "--delay", "0.1", "--fail-rate", "1" })
      finally(stop)
      assert.matches("^http://127%.0%.0%.1:%d+$", info.api)
      local env = { FOXAPI_BASE_URL = info.foxapi, POWERTOKENS_BASE_URL = info.powertokens }
      local r = run(nil, { "edit", "-i", URL, "--prompt", "p", "-o", out }, env)
      assert.equal(1, r.status)
      assert.matches("task_failed", r.err, 1, true)
      r = run(nil, { "edit", "-p", "powertokens", "-i", URL, "--prompt", "p", "-o", out }, env)
      assert.equal(1, r.status)
      assert.matches("server", r.err, 1, true)
    end)

    it("--fault and --task-outcome inject what they say", function()
      local info, stop = start({ "--delay", "0", "--task-outcome", "cancelled",
                                 "--fault", '{"path": "/powertokens/v1/images/edits", "status": 402}' })
      finally(stop)
      local env = { FOXAPI_BASE_URL = info.foxapi, POWERTOKENS_BASE_URL = info.powertokens }
      local r = run(nil, { "edit", "-i", URL, "--prompt", "p", "-o", out }, env)
      assert.equal(1, r.status)
      assert.matches("cancelled", r.err, 1, true)
      r = run(nil, { "edit", "-p", "powertokens", "-i", URL, "--prompt", "p", "-o", out }, env)
      assert.equal(1, r.status)
      assert.matches("quota", r.err, 1, true)
      -- the fault was used once: the next request goes through
      r = run(nil, { "edit", "-p", "powertokens", "-i", URL, "--prompt", "p", "-o", out }, env)
      assert.equal(0, r.status, r.err)
    end)

    it("refuses addresses other than loopback and bad switches with status 2", function()
      for _, args in ipairs({ { "--host", "0.0.0.0" }, { "--fail-rate", "2" }, { "--fault", "{" },
                              { "--fault", '{"nope": 1}' }, { "--task-outcome", "maybe" } }) do
        local r = run(nil, { "mock", args[1], args[2] })
        assert.equal(2, r.status, args[1])
        assert.matches("imgedit mock: ", r.err, 1, true)
      end
    end)
  end)
end)
