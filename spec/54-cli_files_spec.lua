-- The command and the files around it: images it never writes over unless
-- told to, and a batch journal that must be a file of its own and whose
-- failure stops the batch. Run as a child process against the emulator.
local cjson = require("cjson")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
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

--- A character device node (root only: fails loudly otherwise, never skips).
local function mknod(path, major, minor)
  assert(helpers.run("id -u"):match("^0%s*$"),
    "this spec makes device nodes with mknod in a scratch directory, which needs root: run it as root")
  helpers.run(("mknod %s c %d %d"):format(quote(path), major, minor))
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
      local images = {}
      for _, name in ipairs(helpers.ls(out)) do
        if name:match("%.png$") then images[#images + 1] = name end
      end
      assert.same({ "beach-1.png", "fox-1.png", "fox-2.1.png", "fox-2.png" }, images)
    end)
  end)

  describe("the batch journal", function()
    local function batch(opts)
      local jobs = write_jobs(dir, {
        { id = "a", prompt = "p1", images = { URL } },
        { id = "b", prompt = "p2", images = { URL } },
        { id = "c", prompt = "p3", images = { URL } },
      })
      return helpers.imgedit(m, { "batch", jobs, "-o", out, "--concurrency", "1" }, opts)
    end

    it("is refused when it is a symbolic link, and nothing is sent", function()
      helpers.write(dir .. "/elsewhere.jsonl", "")
      helpers.run(("ln -s ../elsewhere.jsonl %s"):format(quote(out .. "/" .. JOURNAL)))
      local r = batch()
      assert.equal(2, r.status, r.out .. r.err)
      assert.matches(out .. "/" .. JOURNAL .. " is a symbolic link, which imgedit does not follow", r.err, 1, true)
      assert.equal(0, #m:requests())
      assert.equal("", helpers.read(dir .. "/elsewhere.jsonl"))
    end)

    it("is refused at once when it is a FIFO or a device node, and nothing is sent", function()
      helpers.run("mkfifo " .. quote(out .. "/" .. JOURNAL))
      local r = batch({ timeout = 20 })
      assert.equal(2, r.status, r.out .. r.err)
      assert.matches(JOURNAL .. " is a fifo, not a regular file", r.err, 1, true)
      os.remove(out .. "/" .. JOURNAL)
      mknod(out .. "/" .. JOURNAL, 1, 7)
      r = batch()
      assert.equal(2, r.status, r.out .. r.err)
      assert.matches(JOURNAL .. " is a character device, not a regular file", r.err, 1, true)
      assert.equal(0, #m:requests())
    end)

    it("that cannot be written stops further submissions at once, exits 1 and promises no resume", function()
      -- A journal of 256 KiB under a file size limit of 64 or 128 KiB
      -- (ulimit -f counts 512- or 1024-byte blocks, by shell): every append
      -- to it fails (EFBIG; SIGXFSZ ignored), as on a full disk, while the
      -- 4 KiB images still fit.
      local old = cjson.encode({ event = "failed", job = "old", spec = "{}", kind = "timeout", time = 1 }) .. "\n"
      helpers.write(out .. "/" .. JOURNAL, old:rep(math.ceil(262144 / #old)))
      local before = helpers.read(out .. "/" .. JOURNAL)
      local r = batch({ shell = "trap '' XFSZ; ulimit -f 128;" })
      assert.equal(1, r.status, r.out .. r.err)
      -- the first job's submission could not be journaled: no other was made
      assert.equal(1, #helpers.api_requests(m, SUBMIT))
      assert.matches("cannot write the journal " .. out .. "/" .. JOURNAL .. ": File too large", r.out, 1, true)
      assert.matches("2 jobs were not submitted", r.out, 1, true)
      assert.matches("failed b (line 2): imgedit: io: b: not submitted: cannot write the journal", r.out, 1, true)
      assert.is_nil(r.out:find("resumes polling", 1, true))
      assert.is_nil(r.err:find("resumes polling", 1, true))
      -- the task that was paid for is waited for and saved all the same
      assert.matches("a: " .. out .. "/a-1.png", r.out, 1, true)
      assert.is_true(is_png(out .. "/a-1.png"))
      assert.equal(before, helpers.read(out .. "/" .. JOURNAL))
    end)
  end)
end)
