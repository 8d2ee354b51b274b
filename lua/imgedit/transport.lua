--- HTTP with retries: one request to a provider, or one download of a result.
--
-- The retry rules (doc/api.md "Retries", doc/providers.md "Rules for any
-- client") live here and only here:
-- a billed POST is resent only when it surely never reached the server, or
-- when the server said so (429, 503); GETs are safe to resend.
-- @module imgedit.transport

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local json = require("imgedit.json")
local log = require("imgedit.log")
local params = require("imgedit.params")
local scheduler = require("imgedit.scheduler")

local transport = {}

--- Backoff: full jitter over an exponential ceiling (seconds).
local BACKOFF_BASE, BACKOFF_CAP = 0.5, 20
--- Without a caller's deadline, no single wait between attempts is longer.
local MAX_UNBOUNDED_WAIT = 60
--- Redirects followed when downloading a result (CDNs redirect; APIs do not).
local MAX_REDIRECTS = 5

--- The response headers that carry a request id, in the order they are looked for.
local REQUEST_ID_HEADERS = { "x-request-id", "x-oneapi-request-id", "request-id", "x-trace-id" }

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Seconds from now that an HTTP date (RFC 9110 IMF-fixdate) lies ahead.
local function seconds_until_http_date(value)
  local day, mon, year, h, m, s = value:match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not day or not MONTHS[mon] then return nil end
  local stamp = os.time({ year = tonumber(year), month = MONTHS[mon], day = tonumber(day),
                          hour = tonumber(h), min = tonumber(m), sec = tonumber(s), isdst = false })
  -- os.time reads the table as local time; correct it by this zone's offset
  local now = os.time()
  local offset = os.difftime(now, os.time(os.date("!*t", now)))
  return os.difftime(stamp + offset, now)
end

--- The delay the server asked for, in seconds, or nil.
function transport.retry_after(headers)
  local ms = tonumber(headers["retry-after-ms"] or "")
  if ms and ms >= 0 then return ms / 1000 end
  local value = headers["retry-after"]
  if not value then return nil end
  local seconds = tonumber(value)
  if seconds then return seconds >= 0 and seconds or nil end
  local ahead = seconds_until_http_date(value)
  if ahead then return math.max(0, ahead) end
  return nil
end

--- A short, single-line excerpt of a body that is not the JSON expected
-- (an HTML page from a proxy, say), for error messages.
local function excerpt(body)
  if not body or body == "" then return "an empty body" end
  local text = body:sub(1, 2000):gsub("<[^>]*>", " "):gsub("%s+", " ")
  text = text:gsub("^ ", ""):gsub(" $", "")
  if #text > 120 then text = text:sub(1, 117) .. "..." end
  if text == "" then return "a body that is not JSON" end
  return ("a body that is not JSON: %q"):format(text)
end

--- Turns a non-2xx response into an error (fields from the provider's body).
local function http_error(res, secret, model)
  local status = res.status
  local fields = { status = status, request_id = res.request_id }
  local message
  local body = res.json
  if type(body) == "table" then
    local e = body.error
    if type(e) == "table" then
      if type(e.message) == "string" then message = e.message end
      if type(e.type) == "string" then fields.type = e.type end
      if type(e.code) == "string" or type(e.code) == "number" then fields.code = e.code end
    elseif type(e) == "string" then
      message = e
    elseif type(body.message) == "string" then
      message = body.message
    end
  end
  if not message then
    message = ("HTTP %d with %s"):format(status, excerpt(res.body))
  end
  local kind = errors.kind_for_status(status, fields.type)
  if status == 403 or fields.type == "permission_error" then
    -- the key is valid, but not for this: a message of its own
    local about_model = model and (message:lower():find("model", 1, true) or tostring(fields.code):find("model"))
    message = ("the API key lacks permission for %s: %s"):format(about_model and ("model " .. model)
      or "this request", message)
    fields.advice = about_model and "use a key allowed to use this model, or another model"
      or "use a key with this permission, or ask the provider to grant it"
  elseif fields.type == "service_unavailable_error" then
    -- no channel serves the request now: nothing was done, a later submission may work
    fields.later = true
    fields.advice = "no channel of the provider serves this request now; submit it again later"
  end
  return errors.new(kind, message, fields, secret)
end

--- curl codes of TLS failures that another attempt cannot mend: the peer's
-- certificate, or our CA file, is what it is.
local CERTIFICATE_CODES = {
  [58] = true, -- CURLE_SSL_CERTPROBLEM
  [60] = true, -- CURLE_PEER_FAILED_VERIFICATION
  [77] = true, -- CURLE_SSL_CACERT_BADFILE
  [83] = true, -- CURLE_SSL_ISSUER_ERROR
  [90] = true, -- CURLE_SSL_PINNEDPUBKEYNOTMATCH
  [91] = true, -- CURLE_SSL_INVALIDCERTSTATUS
}

local CERTIFICATE_ADVICE = "the server's certificate could not be verified: set ca_file to the PEM file of the CA"
  .. " that signed it (or fix the system's CA bundle); insecure = true skips the check, for test servers only"

--- What to do about a failed transfer, by curl code (libcurl-errors(3)),
-- where the advice of its kind says too little. `sent`: whether any byte
-- of the request left.
local function curl_advice(code, sent)
  if CERTIFICATE_CODES[code] then
    if code == 77 then return "ca_file cannot be used: it must be a readable PEM file of CA certificates" end
    return CERTIFICATE_ADVICE
  end
  if code == 1 or code == 8 then -- CURLE_UNSUPPORTED_PROTOCOL, CURLE_WEIRD_SERVER_REPLY
    if not sent then return "only http:// and https:// URLs can be used" end
    return "the answer is not HTTP (a garbled or HTTP/0.9 status line): check that base_url's host and port"
      .. " are the API's, and the proxy"
  end
  if code == 5 then return "the proxy's host name does not resolve: check the proxy option" end
  if code == 6 then return "the host name does not resolve: check base_url (or the URL) and the DNS" end
  if code == 7 then return "nothing accepts connections there: check base_url's host and port, and the proxy" end
  if code == 35 then return "the TLS handshake failed: check that base_url's port speaks https, and the proxy" end
  if code == 52 then return "the server closed the connection without an answer: retry later" end
  if code == 18 or code == 55 or code == 56 then
    return "the connection broke: check the network and the proxy, then retry"
  end
  return nil
end

--- May this failed attempt be made again?
-- `billed`: the request creates something the account pays for.
local function may_retry(err, billed, not_sent)
  if CERTIFICATE_CODES[err.curl_code] then return false end
  if billed then
    if err.status then return err.status == 429 or err.status == 503 end
    return err.kind == "network" and not_sent
  end
  -- a GET is safe to repeat: also when its answer came back garbled
  if err.kind == "decode" or err.kind == "network" or err.kind == "timeout" then return true end
  local status = err.status or 0
  return status == 408 or status == 409 or status == 429 or status >= 500
end

--- Downloads (results on a CDN) may be large and slow: their whole-transfer
-- limit is at least this (seconds), and a transfer slower than
-- DOWNLOAD_LOW_SPEED bytes/s for DOWNLOAD_LOW_SPEED_TIME seconds is stalled.
local DOWNLOAD_TIMEOUT = 600
local DOWNLOAD_LOW_SPEED, DOWNLOAD_LOW_SPEED_TIME = 1024, 30
--- Polls answer at once: one that sends nothing for this long is stalled.
local GET_LOW_SPEED_TIME = 30

local function is_redirect(res)
  return res.status and res.status >= 300 and res.status < 400
end

--- The error of one attempt, or nil when it succeeded; the second value is
-- true when the request surely never reached the server: not one byte of
-- it left (the core tells, from what curl wrote), so a DNS, connect or TLS
-- failure, and never a failure after the request went out, whatever came
-- back (a garbled status line, an HTTP/0.9 answer, a reset).
local function classify(res, spec, secret)
  if res.error then
    local e = res.error
    return errors.new(e.kind, e.message, { curl_code = e.curl_code,
      advice = e.advice or curl_advice(e.curl_code, e.sent) }, secret), not e.sent
  end
  if is_redirect(res) and not spec.download then
    -- never followed: the request carries the key
    return errors.new("api", ("the API answered with a redirect (HTTP %d) to %s; API requests are not redirected"
      .. " because they carry the key: set base_url to the final address")
      :format(res.status, tostring(res.headers.location)), { status = res.status,
      request_id = res.request_id }, secret)
  end
  if spec.any_status then return nil end
  if res.status >= 400 then return http_error(res, secret, spec.model) end
  if spec.decode and res.json == nil then
    return errors.new("decode", ("the response is not valid JSON (%s)"):format(res.decode_error or "empty body"),
      { status = res.status, request_id = res.request_id })
  end
  return nil
end

--- Sets `res.json`, or `res.decode_error`, from the body of a response.
local function decode(res)
  if res.body == nil then return end
  local value, problem = json.decode(res.body)
  if value == nil then res.decode_error = problem else res.json = value end
end

-- The machine-wide 429 pause (option shared_dict) -----------------------------------
--
-- With shared_dict, a 429's pause is also written to an nginx
-- lua_shared_dict, which every worker of the nginx instance reads, so they
-- back off together; without it, the pause is the client's own.
--
-- The entry is the pause's end as an absolute time on scheduler.now()'s
-- clock, CLOCK_MONOTONIC: it is system-wide (every worker reads the same
-- clock), it is the clock the client's own pause and the deadlines are on
-- (no conversion), and it does not jump when the wall clock is set.
-- ngx.now() would be the other choice: wall-clock time, and cached per
-- event-loop turn, so a worker that has been busy would read it stale.

--- The `lua_shared_dict` named `name` (option shared_dict), or nil and what
-- to do. ngx.shared exists in every phase of lua-nginx-module, init_by_lua
-- and init_worker_by_lua included, so the check is made when the client is.
function transport.shared_dict(name)
  if type(name) ~= "string" or name == "" then
    return nil, ("option shared_dict must be the name of a lua_shared_dict (a non-empty string), got %s")
      :format(params.show(name))
  end
  local ngx = rawget(_G, "ngx")
  local shared = type(ngx) == "table" and ngx.shared
  if not shared then
    return nil, "option shared_dict needs nginx's Lua module (ngx.shared), which is not here: leave it out"
      .. " outside OpenResty (each client then pauses by itself after a 429)"
  end
  local dict = shared[name]
  if not dict then
    return nil, ("option shared_dict: nginx has no lua_shared_dict %s; declare it in the http block of"
      .. " nginx.conf: lua_shared_dict %s 1m;"):format(params.show(name), name)
  end
  return dict
end

--- The dict's key of a client's pause: the provider and the base URL, so
-- that two gateways (or two accounts behind different base URLs) do not
-- pause each other. Never the key: the dict is readable by any Lua code of
-- the nginx instance, and shows no more than tostring(client) does.
local function pause_key(provider, config)
  return ("imgedit 429 pause %s %s"):format(provider.name, config.base_url)
end

--- Writes a 429's pause, ending at `ends` (scheduler.now()) `delay` seconds
-- from now, to the session's shared dict, unless a longer one is there.
-- (get then set is not atomic: two workers writing in the same instant may
-- keep the shorter of two pauses the server gave at that instant; each
-- worker's own client still keeps its own.)
local function share_pause(s, ends, delay)
  local dict, key = s.shared, s.shared_key
  local current = dict:get(key)
  if type(current) == "number" and current >= ends then return end
  -- the entry removes itself when the pause is over; exptime counts whole
  -- milliseconds and 0 would mean "never expires"
  local ok, problem = dict:set(key, ends, math.ceil(delay * 1000) / 1000)
  if not ok then
    -- a dict too small even for one entry: the pause stays this client's
    -- own; said where nginx's operator looks
    local ngx = rawget(_G, "ngx")
    if ngx and ngx.log then
      ngx.log(ngx.WARN, "imgedit: the 429 pause could not be written to shared_dict: ", tostring(problem))
    end
  end
end

-- Sessions -------------------------------------------------------------------------
--
-- A client's session holds what every request of the client shares: its
-- checked options, its key (in a closure, never in a field: printing or
-- serializing a session or its client must not reveal it), the 429 pause,
-- the slots that keep at most max_in_flight requests on the wire, and two
-- prepared core sessions (imgedit.core's: the header list and constant
-- curl options, built once): one for API requests, with the key and the
-- client's headers, one for downloads, without either, each made at the
-- first request of its kind.

--- The session of a client of `provider` (its descriptor) with options
-- `config` (checked) and API key `key` (or nil): `{config, secret = function
-- returning the key, keyed, paused_until, slots, no_key}`, with option
-- shared_dict `shared` (the dict) and `shared_key`, and, once made, `api`
-- and `download`.
function transport.session(provider, config, key)
  local shared = config.shared_dict and assert(transport.shared_dict(config.shared_dict))
  return {
    config = config, secret = function() return key end, keyed = key ~= nil and key ~= "", paused_until = 0,
    shared = shared or nil, shared_key = shared and pause_key(provider, config) or nil,
    slots = scheduler.semaphore(config.max_in_flight),
    no_key = ("no API key: pass api_key to imgedit.client(%q, ...) or set %s"):format(provider.name,
      provider.env.api_key),
  }
end

local function names_header(lines, name)
  local prefix = name:lower() .. ":"
  for _, line in ipairs(lines) do
    if line:sub(1, #prefix):lower() == prefix then return true end
  end
  return false
end

--- A new core session of session `s` for `purpose` ("api" or "download");
-- or nil and a message.
local function prepared(s, purpose)
  local cfg = s.config
  local lines = {}
  if purpose == "api" then
    lines = { "Authorization: Bearer " .. s.secret(), "Accept: application/json" }
    for _, line in ipairs(cfg.header_lines) do lines[#lines + 1] = line end
    if not names_header(cfg.header_lines, "content-type") then lines[#lines + 1] = "Content-Type: application/json" end
  end
  if not (purpose == "api" and names_header(cfg.header_lines, "user-agent")) then
    lines[#lines + 1] = "User-Agent: " .. cfg.user_agent
  end
  return core.session({
    headers = lines, connect_timeout = cfg.connect_timeout, proxy = cfg.proxy, ca_file = cfg.ca_file,
    insecure = cfg.insecure, max_response_bytes = cfg.max_response_bytes,
    max_buffered_bytes = cfg.max_buffered_bytes, request_id_headers = REQUEST_ID_HEADERS,
  })
end

--- What an attempt hands the core (imgedit.core's m:add reads it whole
-- and keeps nothing of it but its own copies and the body string, which it
-- holds itself): one table, filled anew for every attempt, and emptied of
-- the body and output once they are handed over.
local REQUEST = {}

local resolve -- forward: a Location header against the URL it came from

--- Performs one request of a client, through its session, with retries.
--
-- `spec` fields: method, url, json | body, auth (send the key and the
-- client's headers), billed (a POST that costs money), decode (JSON
-- expected: `res.json`), extract (a JSON key, "b64_json": the core decodes
-- its values into `res.blobs` as they arrive, see imgedit.result), output
-- (stream the body to this path), deadline (absolute, scheduler.now()),
-- download (a result: no key, redirects followed, limits for large bodies),
-- model (named in a permission error), max_attempts (instead of the
-- client's), any_status (every HTTP answer is returned, none is an error).
--
-- Returns the result table of the last attempt, with `request_id` and
-- `attempts`, or nil and an error.
function transport.request(s, spec)
  local cfg = s.config
  local max_attempts = spec.max_attempts or (cfg.max_retries + 1)
  local url = spec.url
  local redirects = 0
  local attempt = 0

  if spec.auth and not s.keyed then return nil, errors.new("auth", s.no_key, { attempts = 0 }) end
  local purpose = spec.auth and "api" or "download"
  local session = s[purpose]
  if not session then
    local session_problem
    session, session_problem = prepared(s, purpose)
    if not session then
      return nil, errors.new("invalid_request", "cannot prepare this client's requests: " .. session_problem,
        { attempts = 0 }, s.secret())
    end
    s[purpose] = session
  end
  local body = spec.body
  if spec.json ~= nil then
    local problem
    body, problem = json.encode(spec.json)
    if not body then
      return nil, errors.new("invalid_request", "cannot encode request body as JSON: " .. tostring(problem),
        { attempts = 0 }, s.secret())
    end
  end
  local base_timeout, low_speed_limit, low_speed_time = cfg.timeout, nil, nil
  if spec.download then
    base_timeout = math.max(cfg.timeout, DOWNLOAD_TIMEOUT)
    low_speed_limit, low_speed_time = DOWNLOAD_LOW_SPEED, DOWNLOAD_LOW_SPEED_TIME
  elseif spec.method == "GET" then
    low_speed_limit, low_speed_time = 1, GET_LOW_SPEED_TIME
  end

  while true do
    attempt = attempt + 1
    local now = scheduler.now()
    -- after a 429 the whole client pauses, not only the request that saw it;
    -- with shared_dict, so does every worker (one get per attempt)
    local paused_until, by_other = s.paused_until, false
    local shared = s.shared
    if shared then
      local shared_until = shared:get(s.shared_key)
      if type(shared_until) == "number" and shared_until > paused_until then
        paused_until, by_other = shared_until, true
      end
    end
    local pause = paused_until - now
    if pause > 0 then
      if spec.deadline and now + pause > spec.deadline then
        return nil, errors.new("rate_limited", by_other
          and "the provider asked a client of this nginx (sharing this one's shared_dict) to slow down until"
            .. " after the deadline"
          or "the provider asked this client to slow down until after the deadline",
          { attempts = attempt - 1, retryable = true })
      end
      scheduler.sleep(pause)
      now = scheduler.now()
    end
    local timeout = base_timeout
    if spec.deadline then
      local left = spec.deadline - now
      if left <= 0 then
        return nil, errors.new("timeout", "the operation's time limit ran out before the request was sent",
          { attempts = attempt - 1, retryable = true })
      end
      if left < timeout then timeout = left end
    end

    local slots = s.slots
    slots.acquire()
    local request = REQUEST
    request.method, request.url, request.body, request.extract = spec.method, url, body, spec.extract
    request.output, request.timeout = spec.output, timeout
    request.low_speed_limit, request.low_speed_time = low_speed_limit, low_speed_time
    local transfer, add_problem = scheduler.start(session, request)
    request.body, request.output = nil, nil
    if not transfer then
      slots.release()
      return nil, errors.new("invalid_request", add_problem, { attempts = attempt - 1 }, s.secret())
    end
    local res = scheduler.await(transfer)
    transfer:close()
    slots.release()
    -- a hostile server could echo the key in a request id
    if res.request_id then res.request_id = errors.scrub(res.request_id) end
    if spec.decode then decode(res) end

    -- the common case, a 2xx (decoded when asked to be), needs no classify
    local status = res.status
    if not res.error and status and status >= 200 and status < 300 and (res.json ~= nil or not spec.decode) then
      if log.enabled() then
        log.attempt({ method = spec.method, url = url, status = status, bytes = res.bytes, time = res.time,
                      attempt = attempt, max_attempts = max_attempts })
      end
      res.attempts = attempt
      return res
    end
    local err, not_sent = classify(res, spec, s.secret())
    if log.enabled() then
      log.attempt({ method = spec.method, url = url, status = status, bytes = res.bytes,
                    time = res.time, attempt = attempt, max_attempts = max_attempts,
                    error = err and err.message })
    end

    if not err and is_redirect(res) then
      -- a download moved: follow it (no key is ever sent to a result host)
      redirects = redirects + 1
      local target = res.headers.location and resolve(url, res.headers.location)
      local refused = target and transport.check_url(target, cfg.allow_http)
      if not target or refused or redirects > MAX_REDIRECTS then
        err = errors.new("network", refused or ("too many redirects, or a bad Location, after %s"):format(url),
          { status = res.status, attempts = attempt })
        return nil, err
      end
      url = target
      attempt = attempt - 1
    elseif not err then
      res.attempts = attempt
      return res
    else
      err.attempts = attempt
      err.retryable = may_retry(err, spec.billed, not_sent)
      if not err.retryable or attempt >= max_attempts then
        -- a later attempt of the caller's own may still succeed
        err.retryable = err.retryable or err.later == true
        err.later = nil
        return nil, err
      end
      local hinted = err.status and transport.retry_after(res.headers)
      local delay = hinted or math.random() * math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ^ (attempt - 1))
      local limit = spec.deadline and (spec.deadline - scheduler.now()) or MAX_UNBOUNDED_WAIT
      if delay >= limit then
        err.message = err.message .. (" (a retry would have to wait %.1f s, past the time limit)"):format(delay)
        return nil, err
      end
      if err.status == 429 then
        local ends = scheduler.now() + delay
        s.paused_until = math.max(s.paused_until, ends)
        if s.shared and delay > 0 then share_pause(s, ends, delay) end
      end
      if cfg.on_retry then
        cfg.on_retry({ attempt = attempt + 1, delay = delay, error = err, url = url, method = spec.method })
      end
      if err.status ~= 429 then scheduler.sleep(delay) end
    end
  end
end

--- Resolves a Location header against the URL it came from.
function resolve(base, location)
  if location:match("^[%a][%w+.-]*://") then return location end
  local origin = base:match("^([%a][%w+.-]*://[^/]+)")
  if not origin then return nil end
  if location:sub(1, 2) == "//" then return base:match("^([%a][%w+.-]*:)") .. location end
  if location:sub(1, 1) == "/" then return origin .. location end
  return (base:gsub("[^/]*$", "")) .. location
end

--- Splits a URL into scheme (lower case), host (lower case, IPv6 without
-- its brackets), the rest (path, query, fragment) and the port (a number,
-- or nil); or returns nil and what is wrong with it, in words that never
-- repeat a user name or password it holds.
local function split_url(url)
  if type(url) ~= "string" then return nil, "is not a string" end
  if url:find("[%c%s\127]") then return nil, "contains white space or control characters" end
  local scheme, authority, rest = url:match("^([%a][%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil, "is not a URL of the form scheme://host[:port][/path]" end
  if authority:find("@", 1, true) then
    return nil, "holds a user name or password (before the @): credentials in a URL are refused"
      .. " (they would be sent and logged); pass the key as api_key"
  end
  local host, port_part
  if authority:sub(1, 1) == "[" then
    host, port_part = authority:match("^%[([%x:.]+)%](.*)$")
    if not host then return nil, "has an IPv6 host without its closing ] (write http://[::1]:8080)" end
  else
    host, port_part = authority:match("^([^:]*)(.*)$")
    if host == "" or not host:match("^[%w._~%%-]+$") then
      return nil, "has no valid host name (scheme://host[:port][/path])"
    end
  end
  local port
  if port_part ~= "" then
    local digits = port_part:match("^:(%d+)$")
    port = digits and #digits <= 5 and tonumber(digits)
    if not port or port < 1 or port > 65535 then
      return nil, ("has the port %s; a port is a number from 1 to 65535"):format(port_part:sub(2))
    end
  end
  return scheme:lower(), host:lower(), rest, port
end

local function is_loopback(host)
  if host == "localhost" or host:match("%.localhost$") or host == "::1" then return true end
  local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a then
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    return a == 127 and b < 256 and c < 256 and d < 256
  end
  return false
end

--- Why `url` may not be used, or nil when it may. Plain http is refused for
-- hosts other than loopback unless `allow_http`, before any connection.
function transport.check_url(url, allow_http)
  local scheme, host = split_url(url)
  if not scheme then
    local problem = host
    -- the URL itself is not repeated when it holds credentials
    if problem:find("credentials", 1, true) then return "the URL " .. problem end
    return ("the URL %s %s"):format(params.show(url), problem)
  end
  if scheme == "https" then return nil end
  if scheme ~= "http" then return ("the URL scheme %q is not supported; use https://"):format(scheme) end
  if is_loopback(host) or allow_http then return nil end
  return ("plain http:// to %s is refused (the API key and images would cross the network unencrypted);"
    .. " use https://, or pass allow_http = true to accept the risk"):format(host)
end

return transport
