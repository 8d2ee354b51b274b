-- The providers' CDN: result files on a second listener (another host), so
-- that specs can prove the API key never travels with a download.
--
-- ctx (shared with init.lua): {files = name -> {bytes = approximate size}}.

local http = require("imgedit.mock.http")
local png = require("imgedit.mock.png")

local M = {}

function M.handle(ctx, req)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    local resp = http.response(405, "method not allowed\n", "text/plain")
    http.set_header(resp, "Allow", "GET, HEAD")
    return resp
  end
  local name = req.path:match("^/files/([%w._-]+)%.png$")
  local file = name and ctx.files[name]
  if not file then return http.response(404, "not found\n", "text/plain") end
  local resp = http.response(200, png.image(name, file.bytes).pieces, "image/png")
  http.set_header(resp, "Cache-Control", "private, max-age=86400")
  return resp
end

return M
