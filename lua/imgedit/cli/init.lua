--- The `imgedit` command: `imgedit.cli.main(argv)` → exit status.
--
--     imgedit edit --image URL --prompt TEXT [-o DIR]
--     imgedit generate --prompt TEXT
--     imgedit enhance --image URL
--     imgedit task ID [--wait]
--     imgedit batch jobs.jsonl [--concurrency N] [-o DIR]
--     imgedit mock [emulator options]
--
-- Exit status: 0 success, 1 an API or task failure, 2 a usage error
-- (nothing was sent), 130 interrupted. The options are parsed by
-- lua-argparse; each concern has its module: `job` (one unit of work),
-- `commands` (the single-job commands), `batch`, `journal`, `progress` (the
-- display) and `output` (JSON and errors).
-- @module imgedit.cli

local argparse = require("argparse")

local cli = {}

local ENVIRONMENT = [[
Environment:
  FOXAPI_API_KEY, POWERTOKENS_API_KEY    the API keys (or --api-key)
  FOXAPI_BASE_URL, POWERTOKENS_BASE_URL  API origins, e.g. the emulator's
  IMGEDIT_LOG=debug                      one line per HTTP attempt on stderr

Exit status: 0 success, 1 an API or task failure, 2 a usage error (nothing
was sent), 130 interrupted.]]

local function number_arg(flag, min, max, whole)
  return function(text)
    local value = tonumber(text)
    if not value or (whole and value ~= math.floor(value)) or (min and value < min) or (max and value > max) then
      local what = whole and "a whole number" or "a number"
      if min and max then what = ("%s from %s to %s"):format(what, min, max)
      elseif min then what = ("%s of at least %s"):format(what, min) end
      return nil, ("%s must be %s, got '%s'"):format(flag, what, text)
    end
    if whole and math.tointeger then value = math.tointeger(value) end
    return value
  end
end

--- Options every command that calls an API has.
local function add_common(cmd)
  cmd:group("Output",
    cmd:option("-o --output", "Directory for the images (created if missing).", "."):argname("<dir>"),
    cmd:flag("--json", "Machine-readable output: JSON lines on standard output."),
    cmd:option("--progress", "Progress on standard error: auto (live lines on a terminal, plain log"
      .. " lines otherwise), tty, plain or none.", "auto")
      :choices({ "auto", "tty", "plain", "none" }):argname("<mode>"))
  cmd:group("Connection",
    cmd:option("--timeout", "Seconds to wait for the result (foxapi default 600, powertokens 300).")
      :convert(number_arg("--timeout", 0.001)):argname("<seconds>"),
    cmd:option("--api-key", "API key; default $FOXAPI_API_KEY or $POWERTOKENS_API_KEY (prefer those:"
      .. " a key on the command line shows in ps)."):argname("<key>"),
    cmd:option("--base-url", "API origin; default $FOXAPI_BASE_URL or $POWERTOKENS_BASE_URL, else the"
      .. " provider's."):argname("<url>"),
    cmd:flag("--allow-http", "Accept a plain http:// base URL on another machine (the key then crosses"
      .. " the network unencrypted); loopback needs no flag."))
end

local function add_provider(cmd)
  return cmd:option("-p --provider", "foxapi (PHOTA, asynchronous tasks) or powertokens (Qwen / Wan,"
    .. " synchronous).", "foxapi"):choices({ "foxapi", "powertokens" }):argname("<name>")
end

local function add_name_and_model(cmd)
  return cmd:option("--model", "Model; default phota-image-edit / phota-image / phota-image-enhance"
      .. " (foxapi), qwen-image-2.0-pro (powertokens).")
      :argname("<name>"),
    cmd:option("--name", "File name prefix: DIR/NAME-1.png, ...; default the task or request id.")
      :argname("<prefix>")
end

--- The powertokens generation options edit and generate share, then --name
-- and --model.
local function add_generation_options(cmd)
  return cmd:option("--format", "powertokens: url (default) or b64_json."):choices({ "url", "b64_json" })
      :argname("<fmt>"),
    cmd:option("--seed", "powertokens: random seed, 0-2147483647.")
      :convert(number_arg("--seed", 0, 2147483647, true)):argname("<n>"),
    cmd:option("--negative", "powertokens: what to avoid (negative prompt)."):argname("<text>"),
    add_name_and_model(cmd)
end

--- The argument parser.
function cli.parser()
  local parser = argparse("imgedit", "Edit and generate images through the foxapi and powertokens image APIs.")
    :command_target("command")
    :help_max_width(79)
    :epilog("Run 'imgedit <command> --help' for a command's options.\n\n" .. ENVIRONMENT)
  parser:flag("--version", "Print the version and exit."):action(function()
    local imgedit = require("imgedit")
    local core = require("imgedit.core")
    print(("imgedit %s (%s)"):format(imgedit._VERSION, core.curl_version or "libcurl"))
    os.exit(0)
  end)

  local edit = parser:command("edit", "Edit images by prompt; saves the results.")
    :epilog([[
Examples:
  imgedit edit -i https://example.com/me.jpg --prompt "Beach at sunset" -o out
  imgedit edit -p powertokens -i photo.jpg --prompt "Seaside" --size 1536x1024

foxapi takes public image URLs only; powertokens also takes local files
(sent as data: URIs). Saved files are printed, one per line (--json: one JSON
object).]])
  edit:group("Request",
    add_provider(edit),
    edit:option("-i --image", "Input image: a public URL, or a local file (powertokens). Repeat for"
      .. " several."):count("*"):argname("<url|path>"),
    edit:option("--prompt", "What to change."):count(1):argname("<text>"),
    edit:option("-n", "How many images (foxapi 1-10, powertokens 1-6; default 1).")
      :convert(number_arg("-n", 1, 10, true)):argname("<n>"),
    edit:option("--resolution", "foxapi: 1K (default) or 4K."):choices({ "1K", "4K" }):argname("<res>"),
    edit:option("--size", "powertokens: WxH, e.g. 1536x1024 (512x512 to 2048x2048 pixels).")
      :argname("<WxH>"),
    add_generation_options(edit))
  add_common(edit)

  local generate = parser:command("generate", "Make images from a prompt; saves the results.")
    :epilog([[
Examples:
  imgedit generate --prompt "A red fox in the snow" --aspect-ratio 16:9 -o out
  imgedit generate -p powertokens --prompt "A red fox" --size 1024x1024]])
  generate:group("Request",
    add_provider(generate),
    generate:option("--prompt", "What to draw."):count(1):argname("<text>"),
    generate:option("-n", "How many images (foxapi 1-10, powertokens 1-6; default 1).")
      :convert(number_arg("-n", 1, 10, true)):argname("<n>"),
    generate:option("--resolution", "foxapi: 1K (default) or 4K."):choices({ "1K", "4K" }):argname("<res>"),
    generate:option("--aspect-ratio", "foxapi: 1:1 (default), 2:3, 3:2, 3:4, 4:3, 9:16 or 16:9.")
      :choices({ "1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9" }):argname("<ratio>"),
    generate:option("--size", "powertokens: WxH, e.g. 1536x1024."):argname("<WxH>"),
    add_generation_options(generate))
  add_common(generate)

  local enhance = parser:command("enhance", "Enhance one image (foxapi phota-image-enhance); saves the result.")
    :epilog([[
Example:
  imgedit enhance -i https://example.com/me.jpg --resemblance 0.8 -o out]])
  enhance:group("Request",
    add_provider(enhance),
    enhance:option("-i --image", "The image: a public URL."):count("*"):argname("<url>"),
    enhance:option("--resolution", "4K (default) or 1K."):choices({ "1K", "4K" }):argname("<res>"),
    enhance:option("--creativity", "0 to 1."):convert(number_arg("--creativity", 0, 1)):argname("<x>"),
    enhance:option("--resemblance", "0 to 1."):convert(number_arg("--resemblance", 0, 1)):argname("<x>"),
    add_name_and_model(enhance))
  add_common(enhance)

  local task = parser:command("task", "Show a foxapi task, or wait for it and save its images.")
    :epilog([[
Examples:
  imgedit task task-unified-1757165031-uyujaw3d
  imgedit task task-unified-1757165031-uyujaw3d --wait -o out

Without --wait: one line "ID STATUS PROGRESS%", then the result URLs when
completed. Exit status 1 when the task failed or was cancelled.]])
  task:argument("id", "The task id (printed when it was submitted).")
  task:flag("--wait", "Wait until it finishes, with progress, and save its images.")
  task:option("--name", "File name prefix (with --wait); default the task id."):argname("<prefix>")
  add_common(task)

  local batch = parser:command("batch", "Run the jobs of a JSON-lines file concurrently; resumable.")
    :epilog([[
Each line is one job, a JSON object: "provider" (default --provider), "op"
(edit, generate or enhance; default edit), "id" (the output files' prefix;
default FILE-LINE), and the operation's parameters, as the library names
them: "prompt", "images" (URLs; local files with powertokens), "n",
"resolution", "size", "response_format", "seed", "negative_prompt", ...
Blank lines and lines starting with # are skipped. Example:

  {"id": "beach", "prompt": "Beach at sunset", "images": ["https://..."]}
  {"id": "fox", "op": "generate", "prompt": "A red fox", "n": 2}

Every line is checked before anything is sent. A failed job never stops the
others; a summary ends the run (exit status 1 if any job failed).

Resuming: each foxapi task id is written to DIR/.imgedit-journal.jsonl as soon
as it is submitted. Run the same command again after a crash or Ctrl-C:
jobs whose outputs exist are skipped and journaled tasks are polled, not
submitted (nor paid for) again. --retry-failed submits again the jobs whose
task failed.]])
  batch:argument("file", "The jobs file (JSON lines).")
  batch:option("-c --concurrency", "Jobs at once.", "4"):convert(number_arg("--concurrency", 1, 1000, true))
    :argname("<n>")
  add_provider(batch)
  batch:flag("--retry-failed", "Submit again the jobs whose journaled task failed or was cancelled.")
  add_common(batch)

  local mock = parser:command("mock", "Run the local emulator of both APIs (loopback only), for offline"
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
    output = args.output, timeout = args.timeout,
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
      return nil, output.usage(("%s: %s; fix --base-url or %s"):format(provider, message,
        job.ENV[provider].base_url), args.command)
    end
    clients[provider] = client
    return true
  end
  function ctx.client(provider)
    return clients[provider]
  end
  return ctx
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function make_dir(dir)
  local output = require("imgedit.cli.output")
  local a, _, c = os.execute("mkdir -p -- " .. shell_quote(dir) .. " 2>/dev/null")
  local ok = (type(a) == "number" and a == 0) or (a == true and (c == nil or c == 0))
  if not ok then
    return nil, output.usage(("cannot create the output directory %s: pick another with -o DIR"):format(dir))
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
  local ctx = context(args)
  local ok, err = make_dir(args.output)
  if not ok then return nil, err end
  if args.command == "batch" then
    return require("imgedit.cli.batch").run({
      file = args.file, output = args.output, concurrency = args.concurrency, provider = args.provider,
      retry_failed = args.retry_failed, timeout = args.timeout, json = args.json,
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
