-- foxapi (PHOTA): submit a task, poll it, collect its images.
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
local SEED_URL = "https://example.com/portrait.jpg"

describe("foxapi", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.3 })
  end)

  describe("edit (the seed flow)", function()
    it("submits the seed body, polls the task and returns its images", function()
      local fox = helpers.fox(m)
      local result = assert(fox:edit({
        prompt = "Change the background to a tropical beach at sunset",
        images = { SEED_URL },
      }))
      local posts = helpers.api_requests(m, SUBMIT)
      assert.equal(1, #posts)
      assert.same({
        model = "phota-image-edit",
        prompt = "Change the background to a tropical beach at sunset",
        image_urls = { SEED_URL },
        num_outputs = 1,
        resolution = "1K",
      }, posts[1].json)
      assert.equal("Bearer " .. helpers.KEY, posts[1].headers["authorization"])
      assert.matches("^application/json", posts[1].headers["content-type"])

      assert.equal(1, #result.images)
      assert.matches("^" .. m.cdn .. "/files/", result.images[1].url)
      assert.equal("completed", result.task.status)
      assert.equal(100, result.task.progress)
      assert.equal("phota-image-edit", result.model)
      assert.is_string(result.request_id)
      assert.is_table(result.raw)
      local polls = helpers.api_requests(m, "/foxapi/v1/tasks/" .. result.task.id)
      assert.is_true(#polls >= 1)
      for _, poll in ipairs(polls) do assert.equal("GET", poll.method) end
    end)

    it("sends the wire names too, and profile_ids only when given", function()
      local fox = helpers.fox(m)
      assert(fox:edit({ prompt = "p", image_urls = { SEED_URL, SEED_URL }, num_outputs = 2, resolution = "4K",
                        profile_ids = { "profile_abc123" } }))
      assert(fox:edit({ prompt = "p", images = { SEED_URL } }))
      local posts = helpers.api_requests(m, SUBMIT)
      assert.same({ model = "phota-image-edit", prompt = "p", image_urls = { SEED_URL, SEED_URL },
                    num_outputs = 2, resolution = "4K", profile_ids = { "profile_abc123" } }, posts[1].json)
      assert.is_nil(posts[2].json.profile_ids)
    end)

    it("reports every change of status and progress to on_progress", function()
      m:config({ task_delay = 0.6 })
      local fox = helpers.fox(m)
      local seen = {}
      assert(fox:edit({ prompt = "p", images = { SEED_URL }, on_progress = function(task)
        seen[#seen + 1] = task.status .. ":" .. tostring(task.progress)
      end }))
      assert.equal("pending:0", seen[1])
      assert.equal("completed:100", seen[#seen])
      for i = 2, #seen do assert.are_not.equal(seen[i - 1], seen[i]) end
      assert.is_true(#seen >= 3, "expected pending, processing and completed, saw " .. table.concat(seen, " "))
    end)
  end)

  describe("generate, enhance and create_profile", function()
    it("generate sends phota-image with its fields", function()
      local fox = helpers.fox(m)
      local result = assert(fox:generate({ prompt = "a red fox", aspect_ratio = "16:9", n = 2 }))
      assert.equal(2, #result.images)
      assert.same({ model = "phota-image", prompt = "a red fox", aspect_ratio = "16:9", num_outputs = 2,
                    resolution = "1K" }, helpers.api_requests(m, SUBMIT)[1].json)
    end)

    it("enhance sends phota-image-enhance with only what was given", function()
      local fox = helpers.fox(m)
      assert(fox:enhance({ image = SEED_URL, creativity = 0, resemblance = 0.5 }))
      assert.same({ model = "phota-image-enhance", image_url = SEED_URL, creativity = 0, resemblance = 0.5 },
        helpers.api_requests(m, SUBMIT)[1].json)
    end)

    it("create_profile returns the profile id", function()
      local fox = helpers.fox(m)
      local result = assert(fox:create_profile({ archive = "https://example.com/faces.zip" }))
      assert.matches("^profile_", result.profile_id)
      assert.equal(0, #result.images)
      assert.same({ model = "phota-create-profile", image_archive_url = "https://example.com/faces.zip" },
        helpers.api_requests(m, SUBMIT)[1].json)
    end)

    it("accepts the output = {url, urls} variant of results", function()
      m:config({ result_shape = "output" })
      local fox = helpers.fox(m)
      local result = assert(fox:edit({ prompt = "p", images = { SEED_URL }, n = 2 }))
      assert.equal(2, #result.images)
      assert.matches("^" .. m.cdn, result.images[2].url)
    end)
  end)

  describe("submit and task handles", function()
    it("submit returns a pending task that refresh and wait follow", function()
      local fox = helpers.fox(m)
      local task = assert(fox:submit({ prompt = "p", images = { SEED_URL } }))
      assert.matches("^task%-", task.id)
      assert.equal("pending", task.status)
      assert.is_false(task:done())
      assert.is_number(task.estimated_time)
      assert.is_true(task.can_cancel)
      assert.equal(task, task:refresh())
      local result = assert(task:wait())
      assert.is_true(task:done())
      assert.equal(task, result.task)
      assert.equal(1, #helpers.api_requests(m, SUBMIT))
    end)

    it("a wait that times out carries task_id, and client:task(id):wait() resumes it", function()
      m:config({ task_delay = 1.0 })
      local fox = helpers.fox(m)
      local result, err = fox:edit({ prompt = "p", images = { SEED_URL }, timeout = 0.3 })
      assert.is_nil(result)
      assert.equal("timeout", err.kind)
      assert.is_string(err.task_id)
      assert.matches(err.task_id, tostring(err), 1, true)

      local resumed = fox:task(err.task_id)
      assert.is_nil(resumed.status)
      local later = assert(resumed:wait({ timeout = 5 }))
      assert.equal(err.task_id, later.task.id)
      assert.equal(1, #later.images)
      assert.equal(1, #helpers.api_requests(m, SUBMIT), "resuming must not submit again")
    end)

    it("task() makes no request", function()
      local fox = helpers.fox(m)
      assert(fox:task("task-unified-1-abc"))
      assert.equal(0, #helpers.api_requests(m))
    end)

    it("an unknown task id is not_found", function()
      local fox = helpers.fox(m)
      local task = assert(fox:task("task-does-not-exist"))
      local ok, err = task:refresh()
      assert.is_nil(ok)
      assert.equal("not_found", err.kind)
      assert.equal(404, err.status)
      assert.equal("task-does-not-exist", err.task_id)
    end)
  end)

  describe("task outcomes", function()
    it("a failed task is task_failed with the task's code and message", function()
      m:config({ task_outcome = "failed", fail_code = "content_policy", fail_message = "the image was refused" })
      local fox = helpers.fox(m)
      local result, err = fox:edit({ prompt = "p", images = { SEED_URL } })
      assert.is_nil(result)
      assert.equal("task_failed", err.kind)
      assert.equal("content_policy", err.code)
      assert.matches("the image was refused", err.message, 1, true)
      assert.is_string(err.task_id)
      assert.is_false(err.retryable)
    end)

    it("a cancelled task is cancelled", function()
      m:config({ task_outcome = "cancelled" })
      local fox = helpers.fox(m)
      local result, err = fox:edit({ prompt = "p", images = { SEED_URL } })
      assert.is_nil(result)
      assert.equal("cancelled", err.kind)
      assert.is_string(err.task_id)
    end)
  end)

  describe("validation", function()
    local cases = {
      { "prompt missing", { images = { SEED_URL } }, "prompt is required" },
      { "prompt empty", { prompt = "", images = { SEED_URL } }, "prompt must not be empty" },
      { "prompt not text", { prompt = 42, images = { SEED_URL } }, "prompt must be a string" },
      { "prompt not UTF-8", { prompt = "caf\233", images = { SEED_URL } }, "not valid UTF-8" },
      { "images missing", { prompt = "p" }, "images is required" },
      { "images empty", { prompt = "p", images = {} }, "images must not be empty" },
      { "images not an array", { prompt = "p", images = SEED_URL }, "images must be an array" },
      { "image not a URL", { prompt = "p", images = { "portrait.jpg" } }, "images [1] must be an http(s) URL" },
      { "image a data URI", { prompt = "p", images = { "data:image/png;base64,AAAA" } }, "public http(s) URLs" },
      { "image a local file", { prompt = "p", images = { imgedit.file("x.png") } }, "upload it" },
      { "both names", { prompt = "p", images = { SEED_URL }, image_urls = { SEED_URL } }, "the same parameter" },
      { "n zero", { prompt = "p", images = { SEED_URL }, n = 0 }, "n must be at least 1" },
      { "n fractional", { prompt = "p", images = { SEED_URL }, n = 1.5 }, "n must be an integer" },
      { "resolution", { prompt = "p", images = { SEED_URL }, resolution = "2K" }, 'resolution must be one of "1K"' },
      { "profile_ids", { prompt = "p", images = { SEED_URL }, profile_ids = { 1 } }, "profile_ids [1]" },
      { "unknown parameter", { prompt = "p", images = { SEED_URL }, seed = 1 }, 'unknown parameter "seed"' },
      { "timeout", { prompt = "p", images = { SEED_URL }, timeout = -1 }, "timeout must be a positive" },
      { "on_progress", { prompt = "p", images = { SEED_URL }, on_progress = 1 }, "on_progress must be a function" },
    }
    for _, case in ipairs(cases) do
      it("edit: " .. case[1] .. " is invalid_request and sends nothing", function()
        local fox = helpers.fox(m)
        local result, err = fox:edit(case[2])
        assert.is_nil(result)
        assert.equal("invalid_request", err.kind)
        assert.matches(case[3], err.message, 1, true)
        assert.equal(0, #m:requests())
      end)
    end

    it("generate: aspect_ratio outside the list", function()
      local _, err = helpers.fox(m):generate({ prompt = "p", aspect_ratio = "5:4" })
      assert.equal("invalid_request", err.kind)
      assert.matches("aspect_ratio", err.message)
    end)

    it("enhance: creativity outside 0..1", function()
      local _, err = helpers.fox(m):enhance({ image = SEED_URL, creativity = 1.5 })
      assert.equal("invalid_request", err.kind)
      assert.matches("creativity must be between 0 and 1", err.message, 1, true)
    end)

    it("create_profile: the archive URL is required", function()
      local _, err = helpers.fox(m):create_profile({})
      assert.equal("invalid_request", err.kind)
      assert.matches("archive is required", err.message, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("a wrong Lua type of the argument raises like luaL_argerror", function()
      local fox = helpers.fox(m)
      assert.has_error(function() fox:edit("prompt") end,
        "bad argument #1 to 'edit' (table expected, got string)")
      assert.has_error(function() fox.edit({ prompt = "p" }) end)
      assert.has_error(function() fox:task(42) end, "bad argument #1 to 'task' (string expected, got number)")
    end)

    it("powertokens-only operations are refused clearly", function()
      local pt = helpers.pt(m)
      local _, err = pt:enhance({ image = SEED_URL })
      assert.equal("invalid_request", err.kind)
      assert.matches("powertokens has no enhance operation", err.message, 1, true)
    end)
  end)
end)
