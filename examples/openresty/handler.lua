--- imgedit in OpenResty content handlers (see nginx.conf beside this file).
--
--   location = /edit   { content_by_lua_block { require("handler").edit() } }
--
-- GET /edit?prompt=...&image=https://...[&n=2] edits the image with foxapi
-- and answers {"count": N, "images": [url, ...], "request_id": ...}. While the
-- task runs, the request waits the "ngx" runtime's way (picked by itself
-- inside nginx): the worker serves other requests meanwhile.
-- luacheck: globals ngx

local imgedit = require("imgedit")
local cjson = require("cjson.safe")

local M = {}

-- One client per worker, made at first use: its key and base URL come from
-- FOXAPI_API_KEY and FOXAPI_BASE_URL, which nginx passes on only when
-- nginx.conf names them with `env`. All requests of the worker share its
-- connections.
local fox

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
end

-- imgedit error kind -> HTTP status of our answer
local STATUS = { invalid_request = 400, timeout = 504 }

function M.edit()
  local args = ngx.req.get_uri_args()
  local prompt, image = args.prompt, args.image
  if type(prompt) ~= "string" or type(image) ~= "string" then
    return reply(400, { error = "want ?prompt=...&image=https://..." })
  end
  if not fox then
    local client, err = imgedit.client("foxapi")
    if not client then return reply(500, { error = tostring(err) }) end
    fox = client
  end
  local result, err = fox:edit({ prompt = prompt, images = { image }, n = tonumber(args.n) })
  if not result then
    ngx.log(ngx.ERR, "imgedit: ", tostring(err))
    return reply(STATUS[err.kind] or 502, { error = tostring(err), kind = err.kind, task_id = err.task_id })
  end
  local urls = {}
  for i, picture in ipairs(result.images) do urls[i] = picture.url end
  return reply(200, { count = #result.images, images = urls, request_id = result.request_id })
end

--- A request that needs no image API: it is answered at once, even while
-- edits of the same worker wait.
function M.health()
  ngx.header["Content-Type"] = "text/plain"
  ngx.say("ok ", imgedit.runtime())
end

return M
