--- The gallery of an output directory: `DIR/index.html`, one card per job.
--
-- A card shows a job's id, provider, model, operation, prompt, parameters,
-- status and duration, its source images (remote URLs as links, local files
-- as thumbnails) and every saved result inline; a failed job's card shows the
-- error and what to do about it.
--
-- The page is self-contained: one HTML file with its style and its one small
-- script inline, a Content-Security-Policy that lets it load nothing but the
-- images beside it, and every path relative to `DIR` — it reads offline and
-- after `DIR` is moved. A local source image is copied into
-- `DIR/.imgedit-gallery/` for that reason. Every text of a job (a prompt is
-- user text) is HTML-escaped.
--
-- The cards live in `DIR/.imgedit-gallery/cards.json`; both files are written
-- to a temporary name and renamed, after every change, so a browser refresh
-- during a long batch shows how far it got, and a batch run again (resumed)
-- keeps the cards of the jobs it skips. An `index.html` that imgedit did not
-- write is never overwritten.
-- @module imgedit.cli.gallery

local cjson = require("cjson.safe")
local core = require("imgedit.core")
local file = require("imgedit.file")
local output = require("imgedit.cli.output")
local providers = require("imgedit.providers")

local function default_model(provider, op)
  local d = type(provider) == "string" and providers.get(provider)
  return d and d.defaults[op] or nil
end

local gallery = {}

gallery.PAGE = "index.html"
gallery.DATA_DIR = ".imgedit-gallery"
gallery.CARDS = gallery.DATA_DIR .. "/cards.json"

--- The mark of a page imgedit wrote (the only kind it overwrites).
local GENERATOR = '<meta name="generator" content="imgedit gallery">'

--- Statuses while a job is not finished: the page then reloads itself.
local UNFINISHED = { queued = true, running = true }

--- Up to this many cards, the page is rewritten after every change.
local MANY_CARDS = 500

-- The page's constant style and script. The Content-Security-Policy allows
-- exactly these two by their SHA-256 (base64), so text that escaped its
-- escaping could still neither run nor restyle anything:
--   printf '%s' "$STYLE" | openssl dgst -sha256 -binary | base64
-- spec/52-gallery_spec.lua recomputes both.
local STYLE = [[
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}
header.page{padding:16px 24px;background:#fff;border-bottom:1px solid #ddd}
header.page h1{margin:0 0 4px;font-size:20px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px;padding:16px 24px}
article{background:#fff;border:1px solid #ddd;border-left:6px solid #a1a1aa;border-radius:6px;padding:12px 14px}
article.completed{border-left-color:#16a34a}
article.failed{border-left-color:#dc2626}
article.running{border-left-color:#2563eb}
article h2{margin:0;font-size:16px;word-break:break-all}
.status{font-weight:600;text-transform:uppercase;font-size:12px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:8px 0}
dt{color:#71717a}
dd{margin:0;word-break:break-all}
.prompt{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:6px 8px;margin:8px 0}
figure{margin:6px 0}
figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
.results figure img{min-width:160px}
.sources figure img{max-width:120px}
h3{font-size:13px;margin:10px 0 4px;color:#52525b}
figcaption{font-size:12px;color:#52525b;word-break:break-all}
.error{background:#fef2f2;border:1px solid #fecaca;padding:6px 8px;margin:8px 0}
.error p{margin:2px 0}
.missing{color:#b91c1c;font-size:12px}
]]
local STYLE_SHA256 = "8aUUZH2BAQvozxg75Bx7fbBO1PRJSeiqXVzCKPTw0z4="

-- Marks each image's figure with data-decoded="yes" (the browser decoded
-- it) or "no" (and says so on the card: a result file deleted or damaged
-- since), once every image has loaded or failed.
local SCRIPT = [[
window.addEventListener("load", function () {
  var images = document.querySelectorAll("figure img"), broken = 0;
  for (var i = 0; i < images.length; i++) {
    var img = images[i], figure = img.closest("figure"), decoded = img.naturalWidth > 0;
    figure.setAttribute("data-decoded", decoded ? "yes" : "no");
    if (!decoded) {
      broken++;
      var note = document.createElement("p");
      note.className = "missing";
      note.textContent = img.getAttribute("src") + " cannot be shown: the file is missing or not an image";
      figure.appendChild(note);
    }
  }
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", String(broken));
});
]]
local SCRIPT_SHA256 = "1NLY/qLjcYYBjWYAg1yQxahumMCgk5vacycVr9OBF5s="

gallery.STYLE, gallery.SCRIPT = STYLE, SCRIPT

-- Text and files ------------------------------------------------------------------

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- `value` as HTML text (or an attribute's value): escaped, and without the
-- control characters HTML forbids.
function gallery.escape(value)
  local text = tostring(value):gsub("[%z\1-\8\11\12\14-\31\127]", "")
  return (text:gsub("[&<>\"']", ESCAPES))
end

--- A relative path as a URL path: every byte that is not unreserved is
--- percent-encoded (a name with "#", "?" or a space still loads).
local function url_path(path)
  return (path:gsub("[^%w%-._~/]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

--- Writes `data` to `path` through a temporary name in the same directory,
--- renamed over it when complete: a reader sees the old file or the new one.
local function write_atomically(path, data)
  local tmp = ("%s.tmp-%d"):format(path, math.random(1, 2 ^ 30))
  local f, problem = io.open(tmp, "wb")
  if not f then return nil, problem end
  local ok, write_problem = f:write(data)
  if ok then ok, write_problem = f:close() else f:close() end
  if ok then ok, write_problem = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, write_problem
  end
  return true
end

local function make_dir(path)
  return core.fs.mkdir(path) == true
end

-- Cards ------------------------------------------------------------------------------

local Album = {}
Album.__index = Album

--- Opens the gallery of directory `dir` (which exists), with the cards an
-- earlier run left. Returns it, or nil and a message: the page there is not
-- imgedit's, or the directory cannot hold the gallery.
function gallery.open(dir)
  dir = dir:gsub("(.)/+$", "%1")
  local self = setmetatable({ dir = dir, cards = {}, order = {}, page = dir .. "/" .. gallery.PAGE,
                              now = core.now, written_at = -math.huge }, Album)
  local existing = read(self.page)
  if existing and not existing:find(GENERATOR, 1, true) then
    return nil, ("%s was not written by imgedit: it is left alone, and no gallery is written (use another"
      .. " -o DIR for one)"):format(self.page)
  end
  if not make_dir(dir .. "/" .. gallery.DATA_DIR) then
    return nil, ("cannot create %s/%s: no gallery is written"):format(dir, gallery.DATA_DIR)
  end
  local saved = cjson.decode(read(dir .. "/" .. gallery.CARDS) or "")
  if type(saved) == "table" and type(saved.cards) == "table" then
    for _, card in ipairs(saved.cards) do
      if type(card) == "table" and type(card.id) == "string" and not self.cards[card.id] then
        -- a card of a run that was cut off stays, saying so
        if UNFINISHED[card.status] then card.status = "interrupted" end
        self.cards[card.id] = card
        self.order[#self.order + 1] = card.id
      end
    end
  end
  return self
end

--- The earlier card of job `id`, if any (plain data).
function Album:card(id)
  return self.cards[id]
end

local function is_remote(value)
  return type(value) == "string" and value:match("^[Hh][Tt][Tt][Pp][Ss]?://") ~= nil
end

--- A path relative to the gallery's directory, when it is inside it.
function Album:relative(path)
  local prefix = self.dir .. "/"
  if path:sub(1, #prefix) == prefix then return path:sub(#prefix + 1) end
  return path
end

--- Copies a local source image into the gallery's directory (once), so that
--- its thumbnail survives moving `DIR`. Returns the copy's relative path, or
--- nil when it cannot be read.
function Album:copy_source(id, n, path)
  local bytes = read(path)
  if not bytes or #bytes > file.MAX_BYTES then return nil end
  local _, ext = file.sniff(bytes)
  local name = ("%s/%s-source-%d%s"):format(gallery.DATA_DIR, id, n, ext or ".bin")
  local target = self.dir .. "/" .. name
  if read(target) ~= bytes and not write_atomically(target, bytes) then return nil end
  return name
end

--- The source images among a job's parameters (URLs, local files, data:
--- URIs, alone or in a list), and the other parameters as JSON text.
function Album:split_params(id, params)
  local sources, shown = output.array(), {}
  local function is_source(v)
    return is_remote(v) or file.is(v) or (type(v) == "string" and v:match("^data:") ~= nil)
  end
  local names = {}
  for name in pairs(params) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local value = params[name]
    local list = (type(value) == "table" and not file.is(value) and #value > 0) and value or { value }
    local all = name ~= "prompt" and name ~= "model"
    for _, v in ipairs(list) do all = all and is_source(v) end
    if all then
      for _, v in ipairs(list) do
        if is_remote(v) then
          sources[#sources + 1] = { url = v }
        elseif file.is(v) then
          sources[#sources + 1] = { path = v.path, copy = self:copy_source(id, #sources + 1, v.path) }
        else
          sources[#sources + 1] = { inline = ("a data: URI of %d characters"):format(#v) }
        end
      end
    elseif name ~= "prompt" and name ~= "model" then
      shown[name] = output.encode(value)
    end
  end
  return sources, shown
end

--- Starts (or restarts) the card of job `j` with `status`, in place of an
--- earlier card of the same id. Written by the next `write`.
function Album:put(j, status)
  local id = j.key
  local sources, shown = self:split_params(id, j.params or {})
  local card = {
    id = id, provider = j.provider, op = j.op,
    -- the model named, else the one the operation uses by default
    model = (j.params or {}).model or default_model(j.provider, j.op),
    prompt = type((j.params or {}).prompt) == "string" and j.params.prompt or nil,
    params = shown, sources = sources, status = status, line = j.line, spec = j.spec,
    task_id = j.resume, updated = os.time(),
  }
  if not self.cards[id] then self.order[#self.order + 1] = id end
  self.cards[id] = card
  return card
end

--- Marks the card of job `j` running.
function Album:started(j)
  local card = self.cards[j.key]
  if not card then return self:put(j, "running") end
  card.status, card.updated = "running", os.time()
  return self:changed()
end

--- Ends the card of job `j`: `outcome` is the job's result (`files`,
-- `model`, `task_id`, `request_id`, `resumed`) or `{error = err, hint =
-- what to do}`; `seconds` its duration.
function Album:finished(j, outcome, seconds)
  local card = self.cards[j.key]
  if not card then
    self:put(j, "running")
    card = self.cards[j.key]
  end
  card.seconds, card.updated = seconds, os.time()
  if outcome.error ~= nil then
    local err = outcome.error
    card.status = "failed"
    card.error = { kind = type(err) == "table" and err.kind or "internal", text = output.error_text(err) }
    card.hint = outcome.hint
    card.task_id = type(err) == "table" and err.task_id or card.task_id
    card.results = output.array()
    if type(err) == "table" and type(err.saved) == "table" then
      for i, path in ipairs(err.saved) do card.results[i] = self:relative(path) end
    end
  else
    card.status = "completed"
    card.error, card.hint = nil, nil
    card.model = outcome.model or card.model
    card.task_id = outcome.task_id or card.task_id
    card.request_id = outcome.request_id
    card.resumed = outcome.resumed or nil
    card.results = output.array()
    for i, path in ipairs(outcome.files or {}) do card.results[i] = self:relative(path) end
  end
  return self:changed()
end

--- A job skipped because its outputs exist: its earlier card stays; without
-- one (the files are older than the gallery), a card is made from the job.
-- Written by the next `write`.
function Album:kept(j, files)
  local card = self.cards[j.key]
  if card and card.spec == j.spec and card.status == "completed" then return card end
  card = self:put(j, "completed")
  card.note = "made by an earlier run"
  card.results = output.array()
  for i, path in ipairs(files) do card.results[i] = self:relative(path) end
  return card
end

-- The page ---------------------------------------------------------------------------

local function seconds_text(s)
  if type(s) ~= "number" then return nil end
  if s < 60 then return ("%.1f s"):format(s) end
  return ("%d min %02d s"):format(math.floor(s / 60), math.floor(s % 60))
end

local function figure(src, caption, class)
  return ('<figure class="%s"><a href="%s"><img src="%s" alt="%s" loading="eager"></a>'
    .. "<figcaption>%s</figcaption></figure>"):format(class, gallery.escape(url_path(src)),
    gallery.escape(url_path(src)), gallery.escape(caption), gallery.escape(caption))
end

local function card_html(card)
  local e = gallery.escape
  local out = {}
  local function add(...) for _, s in ipairs({ ... }) do out[#out + 1] = s end end
  add(('<article class="card %s" id="job-%s" data-status="%s">'):format(e(card.status), e(card.id), e(card.status)))
  add(("<h2>%s</h2>"):format(e(card.id)), ('<span class="status">%s</span>'):format(e(card.status)))
  add("<dl>")
  local rows = {
    { "provider", card.provider }, { "operation", card.op }, { "model", card.model or "the provider's default" },
    { "duration", seconds_text(card.seconds) }, { "task", card.task_id }, { "request", card.request_id },
    { "line", card.line }, { "resumed", card.resumed and "yes: its task was polled, not submitted again" },
    { "note", card.note }, { "updated", card.updated and os.date("!%Y-%m-%d %H:%M:%S UTC", card.updated) },
  }
  for _, row in ipairs(rows) do
    local value = row[2]
    -- a whole number read back from cards.json may be a float (Lua 5.3+)
    if type(value) == "number" and value == math.floor(value) then value = ("%d"):format(value) end
    if value ~= nil then add(("<dt>%s</dt><dd>%s</dd>"):format(e(row[1]), e(value))) end
  end
  local names = {}
  for name in pairs(card.params or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    add(('<dt>%s</dt><dd class="param">%s</dd>'):format(e(name), e(card.params[name])))
  end
  add("</dl>")
  if card.prompt then add(('<p class="prompt">%s</p>'):format(e(card.prompt))) end
  if card.sources and #card.sources > 0 then
    add('<section class="sources"><h3>Sources</h3>')
    for _, s in ipairs(card.sources) do
      if s.url then
        add(('<p class="source"><a href="%s" rel="noreferrer">%s</a></p>'):format(e(s.url), e(s.url)))
      elseif s.copy then
        add(figure(s.copy, s.path, "source"))
      else
        add(('<p class="source">%s</p>'):format(e(s.path or s.inline or "?")))
      end
    end
    add("</section>")
  end
  if card.error then
    add('<div class="error">', ('<p class="message">%s</p>'):format(e(card.error.text)))
    if card.hint then add(('<p class="fix">What to do: %s</p>'):format(e(card.hint))) end
    add("</div>")
  end
  if card.results and #card.results > 0 then
    add('<section class="results"><h3>Results</h3>')
    for _, path in ipairs(card.results) do add(figure(path, path, "result")) end
    add("</section>")
  end
  add("</article>")
  return table.concat(out, "\n")
end

--- The page, as a string.
function Album:html()
  local counts, unfinished = {}, false
  local cards = {}
  for _, id in ipairs(self.order) do
    local card = self.cards[id]
    counts[card.status] = (counts[card.status] or 0) + 1
    unfinished = unfinished or UNFINISHED[card.status] ~= nil
    cards[#cards + 1] = card_html(card)
  end
  local summary = {}
  for _, status in ipairs({ "completed", "failed", "running", "queued", "interrupted" }) do
    if counts[status] then summary[#summary + 1] = ("%d %s"):format(counts[status], status) end
  end
  local title = ("imgedit: %s"):format(self.dir:match("([^/]+)$") or self.dir)
  local e = gallery.escape
  return table.concat({
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    GENERATOR,
    ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src \'self\' file: data:;'
      .. " style-src 'sha256-%s'; script-src 'sha256-%s'\">"):format(STYLE_SHA256, SCRIPT_SHA256),
    -- while jobs run, the page reloads itself to show their progress
    unfinished and '<meta http-equiv="refresh" content="5">' or "",
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    ("<title>%s</title>"):format(e(title)),
    "<style>" .. STYLE .. "</style>",
    "<script>" .. SCRIPT .. "</script>",
    "</head><body>",
    ('<header class="page"><h1>%s</h1><p class="summary">%d job%s: %s. Written %s.</p></header>'):format(
      e(title), #self.order, #self.order == 1 and "" or "s", e(table.concat(summary, ", ")),
      e(os.date("!%Y-%m-%d %H:%M:%S UTC"))),
    "<main>",
    table.concat(cards, "\n"),
    "</main></body></html>",
    "",
  }, "\n")
end

--- Writes the page after a change: at once, unless the gallery is so large
--- that rewriting it after every job would cost more than the jobs (then at
--- most once a second; `write` at the end of the run catches up).
function Album:changed()
  self.dirty = true
  if #self.order > MANY_CARDS and self.now() - self.written_at < 1 then return true end
  return self:write()
end

--- Writes the cards and the page. Returns true, or nil and a message; in
--- a run (`gallery.for_run`), the message goes to its log, once, and the
--- gallery stops there while the jobs go on.
function Album:write()
  if self.broken then return true end
  self.dirty, self.written_at = false, self.now()
  local list = output.array()
  for i, id in ipairs(self.order) do list[i] = self.cards[id] end
  local ok, problem = write_atomically(self.dir .. "/" .. gallery.CARDS, output.encode({ format = 1, cards = list }))
  if ok then ok, problem = write_atomically(self.page, self:html()) end
  if not ok then
    local message = ("cannot write the gallery %s: %s"):format(self.page, tostring(problem))
    if not self.log then return nil, message end
    self.log(message)
    self.broken = true
  end
  return true
end

--- A gallery that does nothing, for a run whose directory cannot have one.
local function nothing() return true end
local NONE = { put = nothing, kept = nothing, started = nothing, finished = nothing, write = nothing }

--- The gallery of a run of the command in `dir`: a problem (the page there
--- is not imgedit's, a write fails) goes to `log(message)` once, and never
--- stops the jobs.
function gallery.for_run(dir, log)
  local album, problem = gallery.open(dir)
  if not album then
    log(problem)
    return NONE
  end
  album.log = log
  return album
end

--- Adds the card of one job run by `imgedit edit|generate|enhance
--- --gallery` to the gallery of `dir`, under the job's --name, else its task
--- or request id. `outcome` and `seconds` as for `Album:finished`.
-- Returns the page's path, or nil and a message.
function gallery.single(dir, j, outcome, seconds)
  local album, problem = gallery.open(dir)
  if not album then return nil, problem end
  local err = type(outcome.error) == "table" and outcome.error or {}
  local id = j.name or outcome.task_id or outcome.request_id or err.task_id or err.request_id
  if not id then
    -- a failure before any id: one card per attempt
    local stamp = ("%s-%s"):format(j.op, os.date("!%Y%m%dT%H%M%SZ"))
    id = stamp
    for n = 2, math.huge do
      if not album.cards[id] then break end
      id = ("%s-%d"):format(stamp, n)
    end
  end
  local card_job = setmetatable({ key = id }, { __index = j })
  album:put(card_job, "running")
  local ok, write_problem = album:finished(card_job, outcome, seconds)
  if not ok then return nil, write_problem end
  return album.page
end

return gallery
