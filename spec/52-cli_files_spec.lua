-- The command and the files around it: images it never writes over unless
-- told to, and a batch journal that must be a file of its own and whose
-- failure stops the batch. Run as a child process against the emulator.
local cjson = require("cjson")
local helpers = require("spec.helpers")

local URL = "https://example.com/portrait.jpg"
local JOURNAL = ".imgedit-journal.jsonl"
local PNG_SIGNATURE = "\137PNG\r\n\26\n"

local quote = helpers.shell_quote

local function is_png(path)
  return (helpers.read(path) or ""):sub(1, 8) == PNG_SIGNATURE
end

local function write_jobs(dir, jobs)
  local text = {}
  for i, job in ipairs(jobs) do text[i] = cjson.encode(job) end
  helpers.write(dir .. "/jobs.jsonl", table.concat(text, "\n") .. "\n")
  return dir .. "/jobs.jsonl"
end

describe("the imgedit command's files", function()
  local m, dir, out

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.1 })
    dir = helpers.tmpdir()
    out = dir .. "/out"
    helpers.run("mkdir " .. quote(out))
  end)
  after_each(function() helpers.rmdir(dir) end)

  describe("images", function()
    local function edit(extra)
      local args = { "edit", "-p", "powertokens", "-i", URL, "--prompt", "p", "-n", "2", "--name", "beach", "-o", out }
      for _, a in ipairs(extra or {}) do args[#args + 1] = a end
      return helpers.imgedit(m, args)
    end

    it("never replaces a file it did not write: the image takes the next free name, and the command says so",
      function()
        helpers.write(out .. "/beach-2.png", "the user's own picture")
        local r = edit()
        assert.equal(0, r.status, r.err)
        assert.same({ out .. "/beach-1.png", out .. "/beach-2.1.png" }, { r.out:match("^(%S+)\n(%S+)\n$") })
        assert.equal("the user's own picture", helpers.read(out .. "/beach-2.png"))
        assert.is_true(is_png(out .. "/beach-2.1.png"))
        assert.matches(out .. "/beach-2.png already exists and is kept: this image is saved as " .. out
          .. "/beach-2.1.png (--overwrite replaces existing files)", r.err, 1, true)
      end)

    it("replaces it with --overwrite", function()
      helpers.write(out .. "/beach-2.png", "the user's own picture")
      local r = edit({ "--overwrite" })
      assert.equal(0, r.status, r.err)
      assert.same({ out .. "/beach-1.png", out .. "/beach-2.png" }, { r.out:match("^(%S+)\n(%S+)\n$") })
      assert.is_true(is_png(out .. "/beach-2.png"))
      assert.same({ "beach-1.png", "beach-2.png" }, helpers.ls(out))
    end)

    it("a batch replaces the files its journal says it wrote, and keeps every other", function()
      local jobs = write_jobs(dir, { { id = "beach", provider = "powertokens", prompt = "p1", images = { URL } } })
      local first = helpers.imgedit(m, { "batch", jobs, "-o", out })
      assert.equal(0, first.status, first.out .. first.err)
      helpers.write(out .. "/fox-2.png", "the user's own fox")
      -- the job's line changes: it runs again, over its own file; a new job meets the user's
      jobs = write_jobs(dir, { { id = "beach", provider = "powertokens", prompt = "p2", images = { URL } },
                               { id = "fox", provider = "powertokens", prompt = "p3", images = { URL }, n = 2 } })
      local second = helpers.imgedit(m, { "batch", jobs, "-o", out })
      assert.equal(0, second.status, second.out .. second.err)
      assert.matches("beach: " .. out .. "/beach-1.png\n", second.out, 1, true)
      assert.matches("fox: " .. out .. "/fox-1.png " .. out .. "/fox-2.1.png\n", second.out, 1, true)
      assert.equal("the user's own fox", helpers.read(out .. "/fox-2.png"))
      assert.same({ JOURNAL, "beach-1.png", "fox-1.png", "fox-2.1.png", "fox-2.png" }, helpers.ls(out))
    end)
  end)
end)
