--- The `imgedit` command: `imgedit.cli.main(argv)` → exit status.
--
--     imgedit edit --image URL --prompt TEXT [--model NAME] [-o DIR]
--     imgedit generate --prompt TEXT
--     imgedit enhance --image URL
--     imgedit task ID [--wait]
--     imgedit batch jobs.jsonl [--concurrency N] [-o DIR]
--     imgedit models [-p PROVIDER] [--json]
--     imgedit mock [emulator options]
--
-- There is one command per operation of the providers, and its options
-- come from the model catalogs (`imgedit.cli.models`).
--
-- Exit status: 0 success, 1 an API or task failure, 2 a usage error
-- (nothing was sent), 130 interrupted. The options are parsed by
-- lua-argparse; each concern has its module: `job` (one unit of work),
-- `commands` (the single-job commands), `batch`, `journal`, `models` (the
-- catalogs as the command shows them), `progress` (the display) and
-- `output` (JSON and errors).
-- @module imgedit.cli

local argparse = require("argparse")
local models = require("imgedit.cli.models")

local cli = {}

local unpack = table.unpack or unpack

--- The environment variables of every provider, then the rest.
local function environment()
  local keys, urls = {}, {}
  for _, d in ipairs(models.descriptors()) do
    keys[#keys + 1] = d.env.api_key
    urls[#urls + 1] = d.env.base_url
  end
  local k, u = table.concat(keys, ", "), table.concat(urls, ", ")
  local width = math.max(#k, #u) + 2
  return ([[
Environment:
  %s%sthe API keys (or --api-key)
  %s%sAPI origins, e.g. the emulator's
  %s%sone line per HTTP attempt on stderr

Exit status: 0 success, 1 an API or task failure, 2 a usage error (nothing
was sent), 130 interrupted.]]):format(k, (" "):rep(width - #k), u, (" "):rep(width - #u), "IMGEDIT_LOG=debug",
    (" "):rep(width - 17))
end

local function number_arg(flag, min, max, whole)
  return function(text)
    local value = tonumber(text)
    if not value or value ~= value or value == math.huge or value == -math.huge
      or (whole and value ~= math.floor(value)) or (min and value < min) or (max and value > max) then
      local what = whole and "a whole number" or "a number"
      if min and max then what = ("%s from %s to %s"):format(what, min, max)
      elseif min then what = ("%s of at least %s"):format(what, min) end
      return nil, ("%s must be %s, got '%s'"):format(flag, what, text)
    end
    if whole and math.tointeger then value = math.tointeger(value) end
    return value
  end
end

local function boolean_arg(flag)
  return function(text)
    if text == "true" then return true end
    if text == "false" then return false end
    return nil, ("%s must be true or false, got '%s'"):format(flag, text)
  end
end

--- Options every command that calls an API has.
local function add_common(cmd)
  cmd:group("Output",
    cmd:option("-o --output", "Directory for the images (created if missing).", "."):argname("<dir>"),
    cmd:flag("--json", "Machine-readable output: JSON lines on standard output."),
    cmd:flag("--overwrite", "Replace existing files of the same names (by default a file imgedit did not"
      .. " write is kept, and the image takes the next free name, DIR/NAME-1.1.png, ...)."),
    cmd:option("--progress", "Progress on standard error: auto (live lines on a terminal, plain log"
      .. " lines otherwise), tty, plain or none.", "auto")
      :choices({ "auto", "tty", "plain", "none" }):argname("<mode>"))
  local keys, urls, timeouts = {}, {}, {}
  for _, d in ipairs(models.descriptors()) do
    keys[#keys + 1] = "$" .. d.env.api_key
    urls[#urls + 1] = "$" .. d.env.base_url
    timeouts[#timeouts + 1] = ("%s %d"):format(d.name, d.asynchronous and 600 or d.timeout)
  end
  cmd:group("Connection",
    cmd:option("--timeout", ("Seconds to wait for the result (%s)."):format(table.concat(timeouts, ", ")))
      :convert(number_arg("--timeout", 0.001, 1e9)):argname("<seconds>"),
    cmd:option("--api-key", ("API key; default %s (prefer those: a key on the command line shows in ps).")
      :format(models.join(keys))):argname("<key>"),
    cmd:option("--base-url", ("API origin; default %s, else the provider's."):format(models.join(urls)))
      :argname("<url>"),
    cmd:flag("--allow-http", "Accept a plain http:// base URL on another machine (the key then crosses"
      .. " the network unencrypted); loopback needs no flag."))
end

--- --gallery, for the single-job commands that save images.
local function add_gallery(cmd)
  return cmd:flag("--gallery", "Also add the job's card to DIR/index.html, the page of results a batch"
    .. " writes (earlier cards are kept).")
end

--- -p/--provider among `names`, default `default` (or the first).
local function add_provider(cmd, names, default)
  local described = {}
  for _, name in ipairs(names) do
    described[#described + 1] = ("%s (%s)"):format(name, require("imgedit.providers").get(name).title)
  end
  return cmd:option("-p --provider", table.concat(described, ", ") .. ".", default or names[1])
    :choices(names):argname("<name>")
end

--- The operation's options: --model, --name, --set, then one per field of
-- the catalogs' models that do `op`, with their help.
local function add_request_options(cmd, op)
  local defaults = {}
  for _, d in ipairs(models.descriptors()) do
    if d.defaults[op] then defaults[#defaults + 1] = ("%s (%s)"):format(d.defaults[op], d.name) end
  end
  local list = {
    cmd:option("--model", ("Any model, in the catalog or not ('imgedit models' lists them); default %s.")
      :format(table.concat(defaults, ", "))):argname("<name>"),
    cmd:option("--set", "Set a parameter by name to a JSON value, e.g. --set 'seed=7'; repeatable. Checked as"
      .. " that parameter when the model has it, sent as given otherwise."):count("*"):argname("<name=json>"),
    cmd:option("--name", "File name prefix: DIR/NAME-1.png, ...; default the task or request id.")
      :argname("<prefix>"),
  }
  for _, option in ipairs(models.options(op)) do
    local names = option.flag .. (option.alias and (" " .. option.alias) or "")
    local o = cmd:option(names, models.help(option))
    if option.type == "integer" then
      o:convert(number_arg(option.flag, nil, nil, true)):argname("<n>")
    elseif option.type == "number" then
      o:convert(number_arg(option.flag)):argname("<x>")
    elseif option.type == "boolean" then
      o:convert(boolean_arg(option.flag)):argname("<true|false>")
    else
      o:argname("<" .. option.name:gsub("_", "-") .. ">")
    end
    list[#list + 1] = o
  end
  return list
end

--- What follows the examples of each operation's help.
local NOTES = {
  edit = [[
Input images are public URLs; where the provider takes local files, paths
too (sent as data: URIs). Saved files are printed, one per line (--json: one
JSON object). Each option says which models take it.]],
  create_profile = "Prints the profile id; later requests take it with --set 'profile_ids=[\"ID\"]'.",
}

--- The help's epilog of `op`: the providers' examples, then the notes.
local function epilog(op)
  local lines = {}
  for _, d in ipairs(models.descriptors()) do
    for _, example in ipairs((d.examples or {})[op] or {}) do lines[#lines + 1] = "  " .. example end
  end
  local text = #lines > 0 and ((#lines == 1 and "Example:\n" or "Examples:\n") .. table.concat(lines, "\n")) or ""
  if NOTES[op] then text = text .. (text ~= "" and "\n\n" or "") .. NOTES[op] end
  return text ~= "" and text or nil
end

local SUMMARY = {
  edit = "Edit images by prompt; saves the results.",
  generate = "Make images from a prompt; saves the results.",
  enhance = "Enhance one image; saves the result.",
  create_profile = "Make a face profile from a ZIP of photos; prints its id.",
}

--- The argument parser.
function cli.parser()
  local parser = argparse("imgedit", ("Edit and generate images through the %s image APIs.")
      :format(models.join(require("imgedit.providers").names(), "and")))
    :command_target("command")
    :help_max_width(79)
    :epilog("Run 'imgedit <command> --help' for a command's options.\n\n" .. environment())
  parser:flag("--version", "Print the version and exit."):action(function()
    local imgedit = require("imgedit")
    local core = require("imgedit.core")
    print(("imgedit %s (%s)"):format(imgedit._VERSION, core.curl_version or "libcurl"))
    os.exit(0)
  end)

  for _, op in ipairs(models.operations()) do
    local cmd = parser:command(op, SUMMARY[op] or (op .. " through a provider's model."))
    if epilog(op) then cmd:epilog(epilog(op)) end
    -- every provider may be named: one without the operation is told so
    local request = { add_provider(cmd, require("imgedit.providers").names(), models.providers_for(op)[1]) }
    local has_images, has_prompt = false, false
    for _, d in ipairs(models.descriptors()) do
      for _, entry in ipairs(d.models) do
        for _, f in ipairs(models.fields(entry, op)) do
          has_images = has_images or models.is_images(f)
          has_prompt = has_prompt or f.name == "prompt"
        end
      end
    end
    if has_images then
      request[#request + 1] = cmd:option("-i --image", "Input image: a public URL, or a local file where the"
        .. " provider takes them. Repeat for several."):count("*"):argname("<url|path>")
    end
    if has_prompt then
      request[#request + 1] = cmd:option("--prompt", "What to make or change."):argname("<text>")
    end
    for _, o in ipairs(add_request_options(cmd, op)) do request[#request + 1] = o end
    cmd:group("Request", unpack(request))
    add_common(cmd)
    add_gallery(cmd)
  end

  local async = {}
  for _, d in ipairs(models.descriptors()) do
    if d.asynchronous then async[#async + 1] = d.name end
  end
  if #async > 0 then
    local task = parser:command("task", "Show a task, or wait for it and save its images.")
      :epilog([[
Examples:
  imgedit task task-unified-1757165031-uyujaw3d
  imgedit task task-unified-1757165031-uyujaw3d --wait -o out

Without --wait: one line "ID STATUS PROGRESS%", then the result URLs when
completed. Exit status 1 when the task failed or was cancelled.]])
    task:argument("id", "The task id (printed when it was submitted).")
    add_provider(task, async)
    task:flag("--wait", "Wait until it finishes, with progress, and save its images.")
    task:option("--name", "File name prefix (with --wait); default the task id."):argname("<prefix>")
    add_common(task)
  end

  local batch = parser:command("batch", "Run the jobs of a JSON-lines file concurrently; resumable.")
    :epilog([[
Each line is one job, a JSON object: "provider" (default --provider), "op"
(the operation, default edit), "id" (the output files' prefix; default
FILE-LINE), "model" (any model), "extra" (fields sent as given), and the
operation's parameters, as the library names them: "prompt", "images" (URLs;
local files where the provider takes them), "n", "size", ... Blank lines and
lines starting with # are skipped. Example:

  {"id": "beach", "prompt": "Beach at sunset", "images": ["https://..."]}
  {"id": "fox", "op": "generate", "prompt": "A red fox", "n": 2}

Every line is checked before anything is sent. A failed job never stops the
others; a summary ends the run (exit status 1 if any job failed).

Resuming: each task id is written to DIR/.imgedit-journal.jsonl as soon as it
is submitted. Run the same command again after a crash or Ctrl-C: jobs whose
outputs exist are skipped and journaled tasks are polled, not submitted (nor
paid for) again. --retry-failed submits again the jobs whose task failed.

Gallery: DIR/index.html shows a card per job (prompt, parameters, status,
sources, the saved images inline, a failure's error and what to do),
rewritten as jobs finish; open it in a browser, refresh to follow the run.]])
  batch:argument("file", "The jobs file (JSON lines).")
  batch:option("-c --concurrency", "Jobs at once.", "4"):convert(number_arg("--concurrency", 1, 1000, true))
    :argname("<n>")
  add_provider(batch, require("imgedit.providers").names())
  batch:flag("--retry-failed", "Submit again the jobs whose journaled task failed or was cancelled.")
  add_common(batch)

  local list = parser:command("models", "List every model of the catalogs, with its operations and fields.")
  list:option("-p --provider", "Only this provider's models."):choices(require("imgedit.providers").names())
    :argname("<name>")
  list:flag("--json", "One JSON object per provider.")

  local doctor = parser:command("doctor", "Check the set-up: interpreter, imgedit.core, libcurl and TLS, and"
    .. " each provider's key and base URL.")
    :epilog([[
Exit status 0 when nothing is wrong, 1 otherwise; every problem is printed
with its fix. A key is reported as set or not, never shown. --ping sends
each provider that documents an unbilled request one authenticated request
(foxapi: GET /v1/tasks/<made-up id>, answered 404 when the key is accepted),
and none to a provider that documents none.]])
  doctor:flag("--ping", "Ask each provider whether it accepts the key, with a request it does not bill.")
  doctor:option("-p --provider", "Only this provider (its key is then required)."):choices(
    require("imgedit.providers").names()):argname("<name>")
  doctor:flag("--allow-http", "Accept a plain http:// base URL on another machine, as the other commands would.")
  doctor:flag("--json", "The report as one JSON object.")

  local mock = parser:command("mock", "Run the local emulator of the APIs (loopback only), for offline"
    .. " development. 'imgedit mock --help' lists its options.")
    :handle_options(false)
  mock:argument("options", "The emulator's options: --host, --port, --delay, --fail-rate, --fault, ..."
    .. " (see imgedit mock --help)."):args("*")

  return parser
end

-- Errors ----------------------------------------------------------------------------

local function usage_failure(message, usage, command)
  io.stderr:write("imgedit: error: ", message, "\n")
  if usage then io.stderr:write(usage, "\n") end
  io.stderr:write(("Run 'imgedit%s --help' for all options.\n"):format(command and (" " .. command) or ""))
  return 2
end

-- The context commands share: clients made once per provider, after their
-- key and base URL are checked.
local function context(args)
  local job = require("imgedit.cli.job")
  local output = require("imgedit.cli.output")
  local progress = require("imgedit.cli.progress")
  local imgedit = require("imgedit")
  local clients = {}
  local ctx = {
    output = args.output, timeout = args.timeout, overwrite = args.overwrite == true,
    progress_mode = progress.choose(args.progress),
  }
  function ctx.prepare(provider)
    if clients[provider] then return true end
    local key, problem = job.api_key(provider, args.api_key)
    if not key then
      problem.help = args.command
      return nil, problem
    end
    local client, err = imgedit.client(provider, { api_key = key, base_url = args.base_url,
                                                   allow_http = args.allow_http or nil })
    if not client then
      local message = tostring(err.message or err):gsub("pass allow_http = true", "add --allow-http")
      local env = require("imgedit.providers").get(provider).env
      -- the fix names what was wrong: the key, or the base URL
      local fix = ({ api_key = "--api-key or " .. env.api_key, base_url = "--base-url or " .. env.base_url })
        [err.option]
      return nil, output.usage(("%s: %s%s"):format(provider, message, fix and ("; fix " .. fix) or ""),
        args.command)
    end
    clients[provider] = client
    return true
  end
  function ctx.client(provider)
    return clients[provider]
  end
  return ctx
end

local function make_dir(dir)
  local output = require("imgedit.cli.output")
  local ok, problem = require("imgedit.core").fs.mkdir(dir)
  if not ok then
    return nil, output.usage(("cannot create the output directory %s (%s): pick another with -o DIR")
      :format(dir, tostring(problem)))
  end
  return true
end

local function dispatch(args)
  if args.command == "mock" then
    local ok, mock = pcall(require, "imgedit.mock")
    if not ok then
      io.stderr:write("imgedit: the emulator cannot start: ", tostring(mock):match("^[^\n]*"),
        "\nimgedit: it needs luasocket: apt-get install lua-socket\n")
      return 1
    end
    return mock.main(args.options, "imgedit mock")
  end
  if args.command == "models" then return require("imgedit.cli.models").command(args) end
  if args.command == "doctor" then return require("imgedit.cli.doctor").run(args) end
  local ctx = context(args)
  local ok, err = make_dir(args.output)
  if not ok then return nil, err end
  if args.command == "batch" then
    return require("imgedit.cli.batch").run({
      file = args.file, output = args.output, concurrency = args.concurrency, provider = args.provider,
      retry_failed = args.retry_failed, timeout = args.timeout, json = args.json,
      overwrite = args.overwrite == true or nil,
      progress = ctx.progress_mode, client = ctx.client, check_key = ctx.prepare,
    })
  end
  local commands = require("imgedit.cli.commands")
  if args.command == "task" then return commands.task(args, ctx) end
  return commands.operation(args, ctx)
end

--- Runs the command with `argv` (the script's `arg`); returns the exit status.
function cli.main(argv)
  local list = {}
  for i = 1, #(argv or {}) do list[i] = argv[i] end
  local parser = cli.parser()
  -- argparse reports through `error` of the parser in use: raise instead of
  -- exiting, to print the command's usage and exit with status 2
  parser.error = function(current, message)
    error({ usage_error = message, usage = current:get_usage() }, 0)
  end
  local parsed, args = pcall(parser.parse, parser, list)
  if not parsed then
    if type(args) == "table" and args.usage_error then
      local command = args.usage:match("^Usage: imgedit (%l+)")
      return usage_failure(args.usage_error, args.usage, command)
    end
    error(args, 0)
  end
  local ok, status, problem = xpcall(function() return dispatch(args) end, debug.traceback)
  if not ok then
    local shown = package.loaded["imgedit.cli.progress"]
    if shown and shown.current then shown.current:close() end
    if tostring(status):find("interrupted!", 1, true) then
      io.stderr:write("imgedit: interrupted", args.command == "batch" and ("; run the same command again to"
        .. " go on: journaled tasks are resumed, not submitted again") or "", "\n")
      return 130
    end
    -- tasks already billed come first: they keep running, and can be followed
    local submitted = package.loaded["imgedit.cli.job"] and package.loaded["imgedit.cli.job"].submitted or {}
    for _, id in ipairs(submitted) do
      io.stderr:write(require("imgedit.errors").scrub(("imgedit: task %s was submitted (billed) and keeps running:"
        .. " follow it with: imgedit task %s --wait -o %s\n"):format(id, id, tostring(args.output))))
    end
    io.stderr:write("imgedit: internal error, please report it: ", tostring(status), "\n")
    return 1
  end
  if status == nil then
    local output = require("imgedit.cli.output")
    if args.json then output.json_line({ ok = false, error = { kind = "usage", message = tostring(problem) } }) end
    return usage_failure(tostring(problem), nil, output.is_usage(problem) and problem.help or args.command)
  end
  return status
end

return cli
