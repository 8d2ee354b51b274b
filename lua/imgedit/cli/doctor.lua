--- `imgedit doctor [--ping] [--json] [-p PROVIDER] [--allow-http]`: the
-- checks of `imgedit.doctor`, printed. Exit status 0 when nothing is wrong,
-- 1 otherwise (every problem printed with its fix).
-- @module imgedit.cli.doctor

local doctor = require("imgedit.doctor")
local output = require("imgedit.cli.output")

local command = {}

local HINTS = {
  key = " in the environment (or pass --api-key to the command that edits)",
  ping = "imgedit doctor --ping asks each provider that has an unbilled request",
  allow_http = "add --allow-http",
}

--- The report as JSON: arrays marked as such.
local function as_json(report)
  local sections = output.array()
  for i, section in ipairs(report.sections) do
    sections[i] = { id = section.id, title = section.title, items = output.array(section.items) }
  end
  return { ok = report.ok, problems = report.problems, warnings = report.warnings, sections = sections }
end

local function as_text(report)
  local lines = {}
  for _, section in ipairs(report.sections) do
    lines[#lines + 1] = section.title
    for _, it in ipairs(section.items) do
      lines[#lines + 1] = ("  %-6s %-17s %s"):format(it.status, it.label, it.value or "")
      if it.fix and it.status ~= "ok" then lines[#lines + 1] = ("  %-6s %-17s fix: %s"):format("", "", it.fix) end
    end
    lines[#lines + 1] = ""
  end
  if report.ok then
    lines[#lines + 1] = ("No problem found%s."):format(report.warnings > 0
      and (" (%d warning%s above)"):format(report.warnings, report.warnings == 1 and "" or "s") or "")
  else
    lines[#lines + 1] = ("%d problem%s found: each has its fix above."):format(report.problems,
      report.problems == 1 and "" or "s")
  end
  return table.concat(lines, "\n")
end

--- Runs the command with the parsed `args`; returns the exit status.
function command.run(args)
  local report = doctor.run({ ping = args.ping, provider = args.provider, allow_http = args.allow_http,
                              hints = HINTS })
  if args.json then
    output.json_line(as_json(report))
  else
    io.stdout:write(as_text(report), "\n")
    io.stdout:flush()
  end
  return report.ok and 0 or 1
end

return command
