--- The journal of a batch: `DIR/.imgedit-journal.jsonl` beside the outputs.
--
-- One JSON object per line, appended and flushed as things happen:
--
--     {"event":"submitted","job":"beach","spec":"<the job's line>","task_id":"task-...","time":...}
--     {"event":"done","job":"beach","spec":"...","files":["out/beach-1.png"],"time":...}
--     {"event":"failed","job":"beach","spec":"...","task_id":"...","kind":"task_failed","time":...}
--
-- A task id is written (and flushed to the kernel) as soon as the
-- submission is answered, before any waiting: a batch killed at any point
-- after that, even with SIGKILL, finds the id when it is started again and
-- polls that task instead of paying for a new one. (Flushing is not fsync:
-- the lines survive the process, not a power cut.)
--
-- `spec` ties an entry to the job's exact line: a job whose line was edited
-- since is a different job, and is not resumed from the old entry.
--
-- The journal must be a regular file of its own: a symbolic link, a FIFO or
-- a device at its path is refused before anything is read or sent. Once a
-- write or a flush fails (a full disk), the journal is broken: it writes
-- nothing more, and `broken()` says why, so that the batch stops submitting.
-- @module imgedit.cli.journal

local cjson = require("cjson")
local core = require("imgedit.core")
local output = require("imgedit.cli.output")

local journal = {}

journal.NAME = ".imgedit-journal.jsonl"

local Journal = {}
Journal.__index = Journal

--- Opens (creating it if need be) the journal in directory `dir`, and reads
-- what it holds. Returns the journal, or nil and a message.
function journal.open(dir)
  local path = dir:gsub("/+$", "") .. "/" .. journal.NAME
  local self = setmetatable({ path = path, state = {}, owned = {}, skipped_lines = 0 }, Journal)
  local kind = core.fs.kind(path)
  if kind == "link" then
    return nil, ("the journal %s is a symbolic link, which imgedit does not follow (a journal must be a file of its"
      .. " own): remove the link, or write the batch to another -o DIR"):format(path)
  elseif kind ~= nil and kind ~= "file" then
    return nil, ("the journal %s is a %s, not a regular file: remove it, or write the batch to another -o DIR")
      :format(path, kind)
  end
  local existing = io.open(path, "rb")
  local text = ""
  if existing then
    text = existing:read("*a") or ""
    existing:close()
  end
  for line in text:gmatch("[^\n]+") do
    local ok, entry = pcall(cjson.decode, line)
    if ok and type(entry) == "table" and type(entry.job) == "string" then
      self:_apply(entry)
    else
      -- a line cut short by a crash: what it said is lost, nothing else
      self.skipped_lines = self.skipped_lines + 1
    end
  end
  local handle, problem = io.open(path, "ab")
  if not handle then
    return nil, ("cannot write the journal %s: %s; check that the output directory is writable")
      :format(path, tostring(problem))
  end
  self.handle = handle
  -- a last line without its newline (a crash mid-write) must not swallow the next entry
  if text ~= "" and text:sub(-1) ~= "\n" then self:_append("\n") end
  return self
end

--- Appends text and flushes it; true, or nil and a message (then the
-- journal is broken).
function Journal:_append(text)
  if self.failure then return nil, self.failure end
  local ok, problem = self.handle:write(text)
  if ok then ok, problem = self.handle:flush() end
  if not ok then
    self.failure = ("cannot write the journal %s: %s"):format(self.path, tostring(problem))
    return nil, self.failure
  end
  return true
end

--- Why the journal can no longer be written, or nil.
function Journal:broken()
  return self.failure
end

function Journal:_apply(entry)
  local state = self.state[entry.job]
  if not state or state.spec ~= entry.spec then
    state = { spec = entry.spec }
    self.state[entry.job] = state
  end
  if entry.event == "submitted" and type(entry.task_id) == "string" then
    state.task_id, state.done, state.failed = entry.task_id, nil, nil
  elseif entry.event == "done" and type(entry.files) == "table" then
    state.done, state.failed = entry.files, nil
    for _, path in ipairs(entry.files) do
      if type(path) == "string" then self.owned[path] = true end
    end
  elseif entry.event == "failed" then
    state.failed = entry.kind or true
  end
end

--- What the journal knows of job `key`: `{spec, task_id, done = files,
-- failed = kind}`, or nil.
function Journal:get(key)
  return self.state[key]
end

--- Whether the journal says this batch wrote the file at `path` (then it
-- may be replaced).
function Journal:owns(path)
  return self.owned[path] == true
end

--- Appends an entry and flushes it; true, or nil and a message.
function Journal:write(entry)
  entry.time = os.time()
  self:_apply(entry)
  return self:_append(output.encode(entry) .. "\n")
end

function Journal:submitted(key, spec, task_id)
  return self:write({ event = "submitted", job = key, spec = spec, task_id = task_id })
end

function Journal:done(key, spec, files)
  return self:write({ event = "done", job = key, spec = spec, files = output.array(files) })
end

function Journal:failed(key, spec, task_id, kind)
  return self:write({ event = "failed", job = key, spec = spec, task_id = task_id, kind = kind })
end

function Journal:close()
  if self.handle then
    self.handle:close()
    self.handle = nil
  end
end

return journal
