-- Files on disk: what saving does with each kind of target (a regular file,
-- a symbolic link, a FIFO, a device node, a directory, a socket), where
-- save_all writes, and which local files imgedit.file reads. FIFOs and
-- device nodes are made in a scratch directory (mkfifo; mknod as root),
-- never in /dev; what is on disk is checked with test(1), not with the code
-- under test.
local imgedit = require("imgedit")
local socket = require("socket")
local helpers = require("spec.helpers")

local SEED_URL = "https://example.com/portrait.jpg"
local PNG_SIGNATURE = "\137PNG\r\n\26\n"
local DEADLINE = 10 -- seconds for a FIFO's reader to be ready, or done

local quote = helpers.shell_quote

--- test(1) on `path`: "-f" regular file, "-L" link, "-p" FIFO, "-c" character device, "-S" socket.
local function is(flag, path)
  return helpers.run(("test %s %s && echo yes || echo no"):format(flag, quote(path))):match("yes") ~= nil
end

--- A character device node in the scratch directory: (1, 3) behaves like
-- /dev/null, (1, 7) like /dev/full. Needs root: without it this fails,
-- loudly, rather than skipping what it proves.
local function mknod(path, major, minor)
  assert(helpers.run("id -u"):match("^0%s*$"),
    "this spec makes device nodes with mknod in a scratch directory, which needs root: run it as root")
  helpers.run(("mknod %s c %d %d"):format(quote(path), major, minor))
  assert(is("-c", path), "mknod made no character device at " .. path)
end

local function mkfifo(path)
  helpers.run("mkfifo " .. quote(path))
end

--- Waits (bounded) until `check()` is true.
local function eventually(check, what)
  local deadline = socket.gettime() + DEADLINE
  while not check() do
    assert(socket.gettime() < deadline, what .. " within " .. DEADLINE .. " s")
    socket.sleep(0.01)
  end
end

--- A process that holds `fifo` open for reading, copies the first `n`
-- bytes written to it into `out`, and exits. It opens the FIFO read-write,
-- which never waits for a writer, and says when it has: a writer may come.
local function fifo_reader(fifo, n, out)
  local ready, pidfile = out .. ".ready", out .. ".pid"
  local script = ('echo $$ > "%s"; exec 3<> "%s"; echo > "%s"; exec head -c %d <&3 > "%s"')
    :format(pidfile, fifo, ready, n, out)
  os.execute("sh -c " .. quote(script) .. " </dev/null >/dev/null 2>&1 &")
  eventually(function() return helpers.exists(ready) end, "the FIFO's reader did not start")
  local pid = helpers.read(pidfile):match("%d+")
  return {
    -- the bytes it got, once it has all n
    wait = function()
      eventually(function() return #(helpers.read(out) or "") >= n end, "the FIFO's reader did not get the image")
      return helpers.read(out)
    end,
    -- ends it if it is still there (a failed spec)
    stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end,
  }
end

describe("saving", function()
  local m, dir

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    dir = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function url_image()
    return assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } })).images[1]
  end
  local function base64_image()
    return assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" })).images[1]
  end
  local function both()
    return { url = url_image(), base64 = base64_image() }
  end

  describe("image:save", function()
    it("replaces a regular file with the complete image and leaves no temporary file", function()
      local path = dir .. "/out.png"
      helpers.write(path, "old content")
      for _, image in pairs(both()) do
        assert.equal(path, image:save(path))
        assert.equal(assert(image:bytes()), helpers.read(path))
        assert.is_true(is("-f", path))
        assert.same({ "out.png" }, helpers.ls(dir))
      end
    end)

    it("writes through a symbolic link to its target, in the target's directory, and keeps the link", function()
      helpers.run(("mkdir %s/real && ln -s real/target.png %s/link.png"):format(quote(dir), quote(dir)))
      helpers.write(dir .. "/real/target.png", "old")
      for kind, image in pairs(both()) do
        assert.equal(dir .. "/link.png", image:save(dir .. "/link.png"), kind)
        assert.is_true(is("-L", dir .. "/link.png"), kind .. ": the link was replaced")
        assert.equal(assert(image:bytes()), helpers.read(dir .. "/real/target.png"))
        assert.same({ "target.png" }, helpers.ls(dir .. "/real"))
        assert.same({ "link.png", "real" }, helpers.ls(dir))
      end
    end)

    it("refuses a symbolic link to a file that does not exist, and creates nothing", function()
      helpers.run(("ln -s nowhere.png %s/dangling.png"):format(quote(dir)))
      for kind, image in pairs(both()) do
        local ok, err = image:save(dir .. "/dangling.png")
        assert.is_nil(ok, kind)
        assert.equal("io", err.kind)
        assert.matches("symbolic link to a file that does not exist", err.message, 1, true)
        assert.is_true(is("-L", dir .. "/dangling.png"))
        assert.same({ "dangling.png" }, helpers.ls(dir))
      end
    end)

    it("streams the image into a FIFO whose reader waits, and leaves the FIFO in place", function()
      for kind, image in pairs(both()) do
        local fifo = dir .. "/" .. kind .. ".fifo"
        mkfifo(fifo)
        local expected = assert(image:bytes())
        local reader = fifo_reader(fifo, #expected, dir .. "/" .. kind .. ".got")
        local ok, err = image:save(fifo)
        if not ok then reader.stop() end
        assert.equal(fifo, ok, tostring(err))
        assert.is_true(is("-p", fifo), kind .. ": the FIFO was replaced")
        assert.equal(expected, reader.wait())
        reader.stop()
      end
    end)

    it("fails at once with an io error for a FIFO that no process reads, and leaves it", function()
      local fifo = dir .. "/nobody.fifo"
      mkfifo(fifo)
      for kind, image in pairs(both()) do
        local ok, err = image:save(fifo)
        assert.is_nil(ok, kind)
        assert.equal("io", err.kind)
        assert.matches("no process has this FIFO open for reading", err.message, 1, true)
        assert.is_true(is("-p", fifo), kind .. ": the FIFO was replaced")
        assert.same({ "nobody.fifo" }, helpers.ls(dir))
      end
    end)

    it("writes into a device node like /dev/null and leaves the node", function()
      mknod(dir .. "/null", 1, 3)
      for kind, image in pairs(both()) do
        assert.equal(dir .. "/null", image:save(dir .. "/null"), kind)
        assert.is_true(is("-c", dir .. "/null"), kind .. ": the device node was replaced")
        assert.same({ "null" }, helpers.ls(dir))
      end
    end)

    it("returns the ENOSPC of a device node like /dev/full as an io error, and leaves the node", function()
      mknod(dir .. "/full", 1, 7)
      for kind, image in pairs(both()) do
        local ok, err = image:save(dir .. "/full")
        assert.is_nil(ok, kind)
        assert.equal("io", err.kind)
        assert.matches("No space left on device", err.message, 1, true)
        assert.is_true(is("-c", dir .. "/full"), kind .. ": the device node was replaced")
        assert.same({ "full" }, helpers.ls(dir))
      end
    end)

    it("refuses a directory and a socket, naming them, and replaces neither", function()
      local unix = require("socket.unix")
      local listener = assert((unix.stream or unix)())
      assert(listener:bind(dir .. "/sock"))
      helpers.run("mkdir " .. quote(dir .. "/sub"))
      for kind, image in pairs(both()) do
        local ok, err = image:save(dir .. "/sub")
        assert.is_nil(ok, kind)
        assert.equal("io", err.kind)
        assert.matches(dir .. "/sub: it is a directory", err.message, 1, true)
        ok, err = image:save(dir .. "/sock")
        assert.is_nil(ok, kind)
        assert.equal("io", err.kind)
        assert.matches(dir .. "/sock: it is a socket", err.message, 1, true)
        assert.is_true(is("-S", dir .. "/sock"), kind .. ": the socket was replaced")
        assert.same({ "sock", "sub" }, helpers.ls(dir))
      end
      listener:close()
    end)
  end)

  describe("result:save_all", function()
    it("treats a name that exists as image:save does: a device node is written through, never replaced", function()
      mknod(dir .. "/shot-1.png", 1, 3)
      mkfifo(dir .. "/shot-2.png")
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, n = 2 }))
      local expected = assert(result.images[2]:bytes())
      local reader = fifo_reader(dir .. "/shot-2.png", #expected, dir .. "/got")
      local paths, err = result:save_all(dir, "shot")
      if not paths then reader.stop() end
      assert.same({ dir .. "/shot-1.png", dir .. "/shot-2.png" }, paths, tostring(err))
      assert.is_true(is("-c", dir .. "/shot-1.png"))
      assert.is_true(is("-p", dir .. "/shot-2.png"))
      assert.equal(expected, reader.wait())
      reader.stop()
    end)

    it("with overwrite = false keeps every existing file and takes the next free names", function()
      helpers.write(dir .. "/shot-1.png", "the user's own")
      helpers.write(dir .. "/shot-1.1.png", "also the user's")
      mknod(dir .. "/shot-2.png", 1, 7)
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, n = 3,
        response_format = "b64_json" }))
      local paths, taken = assert(result:save_all(dir, "shot", { overwrite = false }))
      assert.same({ dir .. "/shot-1.2.png", dir .. "/shot-2.1.png", dir .. "/shot-3.png" }, paths)
      assert.same({ dir .. "/shot-1.png", dir .. "/shot-2.png" }, { taken[1], taken[2] })
      assert.is_nil(taken[3])
      assert.equal("the user's own", helpers.read(dir .. "/shot-1.png"))
      assert.equal("also the user's", helpers.read(dir .. "/shot-1.1.png"))
      assert.is_true(is("-c", dir .. "/shot-2.png"))
      for i, path in ipairs(paths) do assert.equal(assert(result.images[i]:bytes()), helpers.read(path)) end
    end)

    it("with an overwrite function replaces only the files it allows", function()
      helpers.write(dir .. "/shot-1.png", "mine")
      helpers.write(dir .. "/shot-2.png", "not mine")
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, n = 2 }))
      local asked = {}
      local paths = assert(result:save_all(dir, "shot", { overwrite = function(path)
        asked[#asked + 1] = path
        return path == dir .. "/shot-1.png"
      end }))
      assert.same({ dir .. "/shot-1.png", dir .. "/shot-2.1.png" }, paths)
      assert.same({ dir .. "/shot-1.png", dir .. "/shot-2.png" }, asked)
      assert.equal("not mine", helpers.read(dir .. "/shot-2.png"))
      assert.equal(PNG_SIGNATURE, helpers.read(dir .. "/shot-1.png"):sub(1, 8))
    end)

    it('refuses an empty directory name as invalid_request and writes nothing, not even into /', function()
      local prefix = ("imgedit-spec-%06x"):format(math.random(0, 0xFFFFFF))
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" }))
      local paths, err = result:save_all("", prefix)
      local leaked = helpers.exists("/" .. prefix .. "-1.png")
      os.remove("/" .. prefix .. "-1.png")
      assert.is_false(leaked, "save_all wrote into /")
      assert.is_nil(paths)
      assert.equal("invalid_request", err.kind)
      assert.matches('pass "." to save into the current directory', err.message, 1, true)
    end)

    it("says when the directory is missing or is not a directory", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL }, response_format = "b64_json" }))
      local _, err = result:save_all(dir .. "/missing", "x")
      assert.equal("io", err.kind)
      assert.matches("no such directory; create it first", err.message, 1, true)
      helpers.write(dir .. "/plain", "a file")
      _, err = result:save_all(dir .. "/plain", "x")
      assert.equal("io", err.kind)
      assert.matches("it is a file, not a directory", err.message, 1, true)
      assert.same({ "plain" }, helpers.ls(dir))
    end)
  end)
end)

describe("imgedit.file", function()
  local m, dir

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    dir = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function edit_with(path)
    local result, err = helpers.pt(m):edit({ prompt = "p", images = { imgedit.file(path) } })
    assert.is_nil(result)
    assert.equal(0, #m:requests(), "a request went out")
    return err
  end

  it("refuses a directory, saying so", function()
    local err = edit_with(dir)
    assert.equal("invalid_request", err.kind)
    assert.matches(dir .. " is a directory: give the path of an image file", err.message, 1, true)
  end)

  it("refuses a device node before reading it, as it would /dev/zero or /dev/urandom", function()
    mknod(dir .. "/null", 1, 3)
    local err = edit_with(dir .. "/null")
    assert.equal("invalid_request", err.kind)
    assert.matches("is a character device, not a regular file", err.message, 1, true)
  end)

  it("refuses a FIFO at once, without waiting for a writer", function()
    mkfifo(dir .. "/fifo")
    -- in a child process under timeout(1): a regression would block forever
    local script = ([[
      local imgedit = require("imgedit")
      local pt = assert(imgedit.client("powertokens", { api_key = "sk-test", base_url = %q }))
      local _, err = pt:edit({ prompt = "p", images = { imgedit.file(%q) } })
      io.write(err.kind, "\n", err.message)
    ]]):format(m.powertokens, dir .. "/fifo")
    local out = helpers.run(("LUA_PATH=%s LUA_CPATH=%s timeout %d %s -e %s"):format(quote(package.path),
      quote(package.cpath), DEADLINE, helpers.LUA, quote(script)))
    assert.equal("invalid_request", out:match("^(%S+)\n"))
    assert.matches("is a fifo, not a regular file", out, 1, true)
    assert.equal(0, #m:requests())
  end)

  it("enforces the size limit while reading, not from the size the file reports", function()
    -- /proc files are regular files that report a size of 0
    assert.is_true(is("-f", "/proc/self/maps"))
    local file = require("imgedit.file")
    local limit = file.MAX_BYTES
    file.MAX_BYTES = 64
    local ok, err = pcall(edit_with, "/proc/self/maps")
    file.MAX_BYTES = limit
    assert(ok, err)
    assert.equal("invalid_request", err.kind)
    assert.matches("is larger than the limit of 64 bytes: resize", err.message, 1, true)
  end)
end)

describe("core.fs.mkdir", function()
  local fs = require("imgedit.core").fs

  it("makes a directory and the missing ones above it, and accepts one that exists", function()
    local dir = helpers.tmpdir()
    assert.is_true(fs.mkdir(dir .. "/a/b/c/"))
    assert.is_true(is("-d", dir .. "/a/b/c"))
    assert.is_true(fs.mkdir(dir .. "/a/b"))
    helpers.rmdir(dir)
  end)

  it("says so when a name on the way is a file, or holds a NUL byte", function()
    local dir = helpers.tmpdir()
    helpers.write(dir .. "/file", "x")
    local ok, message, code = fs.mkdir(dir .. "/file/sub")
    assert.is_nil(ok)
    assert.equal("ENOTDIR", code)
    assert.is_string(message)
    ok, message, code = fs.mkdir(dir .. "/x\0y")
    assert.is_string(message)
    assert.is_nil(ok)
    assert.equal("ENUL", code)
    assert.is_false(is("-e", dir .. "/x"))
    helpers.rmdir(dir)
  end)
end)
