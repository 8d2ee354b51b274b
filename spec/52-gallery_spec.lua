-- The gallery (DIR/index.html) of `imgedit batch` and `--gallery`: written
-- from real runs against the emulator, then opened in headless Chromium,
-- which reports through the page itself what it decoded and what it shows.
local cjson = require("cjson")
local gallery = require("imgedit.cli.gallery")
local helpers = require("spec.helpers")

local URL = "https://example.com/portrait.jpg"
local RUN_TIMEOUT = 60      -- seconds: no run of the command may take longer
local CHROMIUM_TIMEOUT = 60 -- seconds for one Chromium run
-- a prompt that would run, restyle or load something if it were not escaped
local HOSTILE = [[Sunset <script>document.title = "pwned"</script> <img src=x onerror="document.title='pwned'">]]
  .. [[ & "quotes" </p><style>body{display:none}</style>]]

local quote = helpers.shell_quote

--- Runs `imgedit args...` against emulator `m`; returns {status, out, err}.
local function run(m, args, cwd)
  local env = ("env -u IMGEDIT_LOG FOXAPI_API_KEY=%s POWERTOKENS_API_KEY=%s FOXAPI_BASE_URL=%s POWERTOKENS_BASE_URL=%s"
    .. " LUA_PATH=%s LUA_CPATH=%s"):format(helpers.KEY, helpers.KEY, quote(m.foxapi), quote(m.powertokens),
    quote(package.path), quote(package.cpath))
  local words = { env, helpers.LUA, quote(helpers.ROOT .. "/bin/imgedit") }
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local p = assert(io.popen(("cd %s && timeout -k 5 %d %s </dev/null >%s 2>%s; echo $?"):format(
    quote(cwd or helpers.ROOT), RUN_TIMEOUT, table.concat(words, " "), quote(out), quote(err))))
  local status = tonumber(p:read("*a"):match("%d+"))
  p:close()
  local r = { status = status, out = helpers.read(out) or "", err = helpers.read(err) or "" }
  os.remove(out)
  os.remove(err)
  return r
end

--- Headless Chromium with the flags this machine needs, a fresh profile, and
--- nothing it may reach but the page's own files. `what`: "--dump-dom" or
--- "--screenshot=PATH"; returns what it printed on standard output.
local function chromium(page, what, profile)
  -- without a sanitizer runtime the specs may run under (check-asan): the
  -- browser is not the code under test
  local command = ("env -u LD_PRELOAD HOME=%s timeout -k 5 %d chromium --headless --no-sandbox --disable-gpu"
    .. " --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync"
    .. " --disable-dev-shm-usage --hide-scrollbars --user-data-dir=%s --window-size=1280,1400"
    .. " --virtual-time-budget=10000 %s %s 2>%s"):format(quote(profile), CHROMIUM_TIMEOUT, quote(profile .. "/data"),
    what, quote("file://" .. page), quote(profile .. "/chromium.log"))
  return helpers.run(command)
end

local function count(text, plain)
  local n, start = 0, 1
  while true do
    local i, j = text:find(plain, start, true)
    if not i then return n end
    n, start = n + 1, j + 1
  end
end

--- The card of job `id` in a dumped DOM.
local function card(dom, id)
  return dom:match('<article class="card [%w]+" id="job%-' .. id:gsub("%-", "%%-") .. '".-</article>')
end

local function write_jobs(path, jobs)
  local lines = {}
  for i, j in ipairs(jobs) do lines[i] = cjson.encode(j) end
  helpers.write(path, table.concat(lines, "\n") .. "\n")
end

local function cards_of(dir)
  local list = {}
  for _, c in ipairs(cjson.decode(helpers.read(dir .. "/.imgedit-gallery/cards.json")).cards) do list[c.id] = c end
  return list
end

describe("gallery", function()
  local m, dir, profile, source

  setup(function()
    m = helpers.start_mock()
    profile = helpers.tmpdir()
  end)
  teardown(function()
    m:stop()
    helpers.rmdir(profile)
  end)
  before_each(function()
    m:reset()
    dir = helpers.tmpdir()
    source = dir .. "/photo.png"
    helpers.write(source, helpers.png("source"))
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("of a batch with completed, failed and resumed jobs shows in Chromium every image decoded, the failure's"
    .. " error and fix, and a hostile prompt as text, also once moved; a missing file shows as such", function()
    local out, jobs = dir .. "/out", dir .. "/jobs.jsonl"
    write_jobs(jobs, {
      { id = "beach", prompt = HOSTILE, images = { URL }, n = 2 },
      { id = "local", provider = "powertokens", prompt = "Seaside", images = { source }, size = "1024x1024" },
      { id = "bad", provider = "powertokens", op = "generate", prompt = "A red fox" },
    })
    -- run 1: the foxapi task outlives --timeout (its id is journaled), the
    -- generation is refused
    m:config({ task_delay = 1.5 })
    m:faults({ { path = "/powertokens/v1/images/generations", status = 400, times = 1 } })
    local r = run(m, { "batch", jobs, "-o", out, "--timeout", "0.5", "--progress", "none" })
    assert.equal(1, r.status, r.err)
    assert.matches("gallery: " .. out .. "/index.html", r.out, 1, true)
    local first = cards_of(out)
    assert.equal("failed", first.beach.status)
    assert.matches("resumes polling task", first.beach.hint, 1, true)
    assert.equal("completed", first["local"].status)
    assert.equal("failed", first.bad.status)

    -- run 2: resumes the task, skips the finished job, fails the refused one again
    m:config({ task_delay = 0.2 })
    m:faults({ { path = "/powertokens/v1/images/generations", status = 400, times = 1 } })
    r = run(m, { "batch", jobs, "-o", out, "--progress", "none" })
    assert.equal(1, r.status, r.err)
    assert.equal(1, #helpers.api_requests(m, "/foxapi/v1/images/generations"), "the task was submitted again")
    local cards = cards_of(out)
    assert.equal("completed", cards.beach.status)
    assert.is_true(cards.beach.resumed)
    assert.same(first["local"], cards["local"], "the skipped job's card changed")
    assert.same({ "beach-1.png", "beach-2.png" }, cards.beach.results)

    local results = { "beach-1.png", "beach-2.png", "local-1.png" }
    for _, name in ipairs(results) do assert.is_true(helpers.exists(out .. "/" .. name), name) end

    local dom = chromium(out .. "/index.html", "--dump-dom", profile)
    -- what the page's script found, from the images Chromium decoded
    assert.matches('<body data-images="4" data-broken="0">', dom, 1, true) -- 3 results + 1 source thumbnail
    assert.equal(#results, count(dom, '<figure class="result" data-decoded="yes">'))
    assert.equal(1, count(dom, '<figure class="source" data-decoded="yes">'))
    assert.equal(0, count(dom, 'data-decoded="no"'))
    -- the failed job: its error and what to do
    local bad = assert(card(dom, "bad"), "no card for the failed job")
    assert.matches('data-status="failed"', bad, 1, true)
    assert.matches("HTTP 400", bad, 1, true)
    assert.matches("What to do: fix line 3 of the jobs file", bad, 1, true)
    -- the hostile prompt is text: no element, no script, no style of its own ran
    local beach = assert(card(dom, "beach"))
    assert.matches('<p class="prompt">Sunset &lt;script&gt;document.title = "pwned"&lt;/script&gt; &lt;img src=x'
      .. " onerror=\"document.title='pwned'\"&gt; &amp; \"quotes\" &lt;/p&gt;&lt;style&gt;", beach, 1, true)
    assert.matches("<title>imgedit: out</title>", dom, 1, true)
    assert.equal(1, count(dom, "<script"))
    assert.equal(1, count(dom, "<style"))
    assert.equal(4, count(dom, "<img "))
    assert.matches('href="' .. URL .. '"', beach, 1, true)
    assert.matches("resumed", beach, 1, true)

    helpers.run("mkdir -p " .. quote(helpers.ROOT .. "/build"))
    local shot = helpers.ROOT .. "/build/gallery.png"
    os.remove(shot)
    chromium(out .. "/index.html", "--screenshot=" .. quote(shot), profile)
    assert.equal("\137PNG\r\n\26\n", (helpers.read(shot) or ""):sub(1, 8), "no screenshot in build/")

    -- moved, with its sources' copies: every path is relative to the directory
    local moved = dir .. "/moved"
    helpers.run(("mv %s %s && rm %s"):format(quote(out), quote(moved), quote(source)))
    dom = chromium(moved .. "/index.html", "--dump-dom", profile)
    assert.matches('<body data-images="4" data-broken="0">', dom, 1, true)
    -- a result deleted since: its figure says so
    os.remove(moved .. "/beach-2.png")
    dom = chromium(moved .. "/index.html", "--dump-dom", profile)
    assert.matches('<body data-images="4" data-broken="1">', dom, 1, true)
    assert.matches('<figure class="result" data%-decoded="no">.-beach%-2%.png cannot be shown', dom)
  end)

  it("allows by their SHA-256 exactly the page's own style and script, and nothing from elsewhere", function()
    local out = dir .. "/out"
    assert.equal(0, run(m, { "generate", "-p", "powertokens", "--prompt", "p", "-o", out, "--gallery" }).status)
    local page = helpers.read(out .. "/index.html")
    local function sha256(text)
      local path = dir .. "/hashed"
      helpers.write(path, text)
      return (helpers.run("openssl dgst -sha256 -binary " .. quote(path) .. " | base64"):gsub("%s", ""))
    end
    local policy = page:match('http%-equiv="Content%-Security%-Policy" content="([^"]+)"')
    assert.equal(("default-src 'none'; img-src 'self' file: data:; style-src 'sha256-%s'; script-src 'sha256-%s'")
      :format(sha256(gallery.STYLE), sha256(gallery.SCRIPT)), policy)
    assert.matches("<style>" .. gallery.STYLE .. "</style>", page, 1, true)
    assert.matches("<script>" .. gallery.SCRIPT .. "</script>", page, 1, true)
    assert.is_nil(page:find("https?://"), "the page names a remote resource")
  end)

  it("--gallery adds one card per single run, keeping the earlier ones, a failure's included", function()
    local out = dir .. "/out"
    local r = run(m, { "edit", "-i", URL, "--prompt", "first", "--name", "one", "-o", out, "--gallery" })
    assert.equal(0, r.status, r.err)
    assert.matches("gallery: " .. out .. "/index.html", r.err, 1, true)
    r = run(m, { "edit", "-p", "powertokens", "-i", source, "--prompt", "second", "-o", out, "--gallery" })
    assert.equal(0, r.status, r.err)
    m:faults({ { path = "/powertokens/v1/images/generations", status = 500, times = 3 } })
    r = run(m, { "generate", "-p", "powertokens", "--prompt", "third", "--name", "three", "-o", out, "--gallery" })
    assert.equal(1, r.status)
    local cards = cjson.decode(helpers.read(out .. "/.imgedit-gallery/cards.json")).cards
    assert.equal(3, #cards)
    assert.same({ "one", "first", "completed", "one-1.png" }, { cards[1].id, cards[1].prompt, cards[1].status,
      cards[1].results[1] })
    assert.equal("second", cards[2].prompt)
    assert.matches("^.imgedit%-gallery/.*%-source%-1%.png$", cards[2].sources[1].copy)
    assert.same({ "three", "failed", "server" }, { cards[3].id, cards[3].status, cards[3].error.kind })
    local page = helpers.read(out .. "/index.html")
    for _, id in ipairs({ "one", "three" }) do assert.matches('id="job-' .. id .. '"', page, 1, true) end
    assert.matches("HTTP 500", page, 1, true)
    -- without --gallery, nothing is written
    local plain = dir .. "/plain"
    assert.equal(0, run(m, { "edit", "-i", URL, "--prompt", "p", "-o", plain }).status)
    assert.is_false(helpers.exists(plain .. "/index.html"))
  end)

  it("marks the cards of a run that was cut off as interrupted, and keeps them", function()
    local out, jobs = dir .. "/out", dir .. "/jobs.jsonl"
    helpers.run("mkdir -p " .. quote(out .. "/.imgedit-gallery"))
    helpers.write(out .. "/.imgedit-gallery/cards.json", cjson.encode({ format = 1, cards = {
      { id = "cut", provider = "foxapi", op = "edit", prompt = "killed", status = "running", task_id = "task-x" },
    } }))
    write_jobs(jobs, { { id = "a", provider = "powertokens", prompt = "p", images = { URL } } })
    assert.equal(0, run(m, { "batch", jobs, "-o", out, "--progress", "none" }).status)
    local cards = cards_of(out)
    assert.equal("interrupted", cards.cut.status)
    assert.equal("completed", cards.a.status)
    local page = helpers.read(out .. "/index.html")
    assert.matches('id="job-cut" data-status="interrupted"', page, 1, true)
    assert.matches("1 completed, 1 interrupted", page, 1, true)
    -- nothing runs any more: the page does not reload itself
    assert.is_nil(page:find('http-equiv="refresh"', 1, true))
  end)

  it("never overwrites an index.html that imgedit did not write, and the batch still runs", function()
    local out, jobs = dir .. "/out", dir .. "/jobs.jsonl"
    helpers.run("mkdir -p " .. quote(out))
    helpers.write(out .. "/index.html", "<h1>my own page</h1>")
    write_jobs(jobs, { { id = "a", provider = "powertokens", prompt = "p", images = { URL } } })
    local r = run(m, { "batch", jobs, "-o", out, "--progress", "plain" })
    assert.equal(0, r.status, r.err)
    assert.matches("was not written by imgedit: it is left alone", r.err, 1, true)
    assert.equal("<h1>my own page</h1>", helpers.read(out .. "/index.html"))
    assert.is_true(helpers.exists(out .. "/a-1.png"))
  end)

  it("escapes every character that could open markup, and drops the control characters HTML forbids", function()
    assert.equal("&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;",
      gallery.escape([[<a href="x" title='y'>&amp;</a>]]))
    assert.equal("a\tb\nc", gallery.escape("a\0\1\tb\n\27c"))
    assert.equal("42", gallery.escape(42))
  end)
end)
