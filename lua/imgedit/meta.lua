---@meta imgedit
-- LuaCATS type definitions of imgedit's public API, for lua-language-server
-- (completion, hover, type checks). Never loaded at run time: add the
-- directory holding `imgedit/` to `workspace.library`.

---@alias imgedit.ErrorKind
---| "invalid_request" # a parameter or option is wrong; nothing was sent
---| "auth"            # HTTP 401, or no API key
---| "quota"           # HTTP 402
---| "not_found"       # HTTP 404: unknown task, expired result URL
---| "rate_limited"    # HTTP 429
---| "api"             # another 4xx, e.g. 422
---| "server"          # HTTP 5xx
---| "timeout"         # a time limit ran out
---| "network"         # DNS, connect, TLS, reset
---| "decode"          # the body is not what was expected
---| "too_large"       # over max_response_bytes
---| "task_failed"     # the task failed on the provider's side
---| "cancelled"       # the task was cancelled
---| "io"              # a local file could not be read or written

---@class imgedit.Error
---@field kind imgedit.ErrorKind
---@field message string what happened
---@field status integer? HTTP status, when there was one
---@field code string|number? from the provider's error body
---@field type string? from the provider's error body
---@field request_id string? from the response headers
---@field retryable boolean whether trying again may succeed
---@field attempts integer? HTTP attempts made
---@field task_id string? foxapi, when a task exists
---@field saved string[]? save_all: the files written before the failure

---@class imgedit.PollOptions
---@field interval number? minimum seconds between polls (0.5)
---@field max_interval number? maximum seconds between polls (15)
---@field timeout number? seconds a wait may last (600)

---@class imgedit.ClientOptions
---@field api_key string? default: env FOXAPI_API_KEY / POWERTOKENS_API_KEY
---@field base_url string? default: env *_BASE_URL, else the provider's URL
---@field timeout number? whole-request limit, seconds (60 foxapi, 300 powertokens)
---@field connect_timeout number? seconds (10)
---@field max_retries integer? extra attempts (2)
---@field proxy string? proxy URL
---@field ca_file string? CA bundle to verify the server with
---@field insecure boolean? skip TLS verification (false)
---@field allow_http boolean? allow plain http:// to non-loopback hosts (false)
---@field user_agent string?
---@field headers table<string, string>? added to API requests (never to result hosts)
---@field max_response_bytes integer? (256 MiB)
---@field poll imgedit.PollOptions?
---@field max_in_flight integer? requests of this client on the wire at once (64)
---@field on_retry fun(info: {attempt: integer, delay: number, error: imgedit.Error, url: string, method: string})?

---@class imgedit.File
---@field path string
---@field mime string?

---@class imgedit.EditParams
---@field prompt string
---@field images (string|imgedit.File)[]? URLs (foxapi: public URLs only), data: URIs or files
---@field image_urls string[]? foxapi wire name of images
---@field n integer? number of images
---@field num_outputs integer? foxapi wire name of n
---@field resolution "1K"|"4K"? foxapi
---@field profile_ids string[]? foxapi
---@field size string? powertokens: "W*H" or "WxH"
---@field response_format "url"|"b64_json"? powertokens
---@field negative_prompt string? powertokens
---@field seed integer? powertokens, 0..2147483647
---@field watermark boolean? powertokens
---@field prompt_extend boolean? powertokens
---@field model string?
---@field timeout number? seconds for the whole operation
---@field on_progress fun(task: imgedit.Task)? foxapi
---@field poll imgedit.PollOptions? foxapi

---@class imgedit.EnhanceParams
---@field image string public URL (wire name image_url)
---@field resolution "1K"|"4K"?
---@field creativity number? 0..1
---@field resemblance number? 0..1
---@field profile_ids string[]?
---@field timeout number?
---@field on_progress fun(task: imgedit.Task)?
---@field poll imgedit.PollOptions?

---@class imgedit.SaveOptions
---@field timeout number? seconds for the whole save, retries included

---@class imgedit.Image
---@field url string? on the provider's CDN; expires after 24 hours
---@field b64_json string? the image, base64
---@field revised_prompt string?
local Image = {}

---Saves the image (streamed from its URL, or decoded); the file appears only once complete.
---@param path string
---@param opts imgedit.SaveOptions?
---@return string? path
---@return imgedit.Error? err
function Image:save(path, opts) end

---@param opts imgedit.SaveOptions?
---@return string? bytes
---@return imgedit.Error? err
function Image:bytes(opts) end

---@class imgedit.Result
---@field images imgedit.Image[]
---@field model string?
---@field created integer?
---@field request_id string?
---@field task imgedit.Task? foxapi: the task that produced it
---@field profile_id string? create_profile only
---@field raw table the decoded response body
local Result = {}

---Saves every image into `dir` as `<prefix>-<n>.<ext>`.
---@param dir string an existing directory
---@param prefix string? default: the task or request id
---@param opts imgedit.SaveOptions?
---@return string[]? paths
---@return imgedit.Error? err
function Result:save_all(dir, prefix, opts) end

---@class imgedit.Task
---@field id string
---@field status "pending"|"processing"|"completed"|"failed"|"cancelled"|nil
---@field progress integer? 0..100
---@field estimated_time number? seconds, from the provider
---@field can_cancel boolean?
---@field model string?
---@field raw table? the last task JSON
local Task = {}

---One GET of the task's state.
---@return imgedit.Task? task
---@return imgedit.Error? err
function Task:refresh() end

---@return boolean done completed, failed or cancelled
function Task:done() end

---Polls until done; `timeout` leaves the task running (err.task_id resumes it).
---@param opts {timeout: number?, on_progress: fun(task: imgedit.Task)?, poll: imgedit.PollOptions?}?
---@return imgedit.Result? result
---@return imgedit.Error? err
function Task:wait(opts) end

---@class imgedit.Client
local Client = {}

---@param params imgedit.EditParams
---@return imgedit.Result? result
---@return imgedit.Error? err
function Client:edit(params) end

---@param params imgedit.EditParams
---@return imgedit.Result? result
---@return imgedit.Error? err
function Client:generate(params) end

---@param params imgedit.EnhanceParams
---@return imgedit.Result? result
---@return imgedit.Error? err
function Client:enhance(params) end

---@param params {archive: string, timeout: number?, on_progress: fun(task: imgedit.Task)?}
---@return imgedit.Result? result with profile_id
---@return imgedit.Error? err
function Client:create_profile(params) end

---foxapi: submit only (billed once).
---@param params imgedit.EditParams
---@return imgedit.Task? task
---@return imgedit.Error? err
function Client:submit(params) end

---foxapi: a handle for an existing task id; no request is made.
---@param id string
---@return imgedit.Task? task
---@return imgedit.Error? err
function Client:task(id) end

---@class imgedit.Handle
local Handle = {}

---Waits for the coroutine; its results, or nil and the error it raised.
---@return any ...
function Handle:join() end

---@class imgedit.Outcome
---@field ok boolean
---@field value any the function's first result, when ok
---@field values table all its results, when ok
---@field err imgedit.Error|string? when not ok

---@class imgedit
---@field _VERSION string
local imgedit = {}

---@param provider "foxapi"|"powertokens"
---@param opts imgedit.ClientOptions?
---@return imgedit.Client? client
---@return imgedit.Error? err
function imgedit.client(provider, opts) end

---@param path string
---@param mime string? detected from the file's first bytes if absent
---@return imgedit.File
function imgedit.file(path, mime) end

---@param value any
---@return boolean
function imgedit.is_error(value) end

---@param fn fun(line: string, record: table)?
function imgedit.log(fn) end

---@param seconds number
function imgedit.sleep(seconds) end

---@generic T
---@param fn fun(...): T
---@return T
function imgedit.run(fn, ...) end

---@param fn function
---@return imgedit.Handle
function imgedit.spawn(fn, ...) end

---Starts fn as a coroutine and returns at once; in Neovim the editor's loop runs it.
---@param fn function
---@return imgedit.Handle
function imgedit.async(fn, ...) end

---@param fns function[]
---@param opts {concurrency: integer?}?
---@return imgedit.Outcome[]
function imgedit.gather(fns, opts) end

---@param name "blocking"|"nvim"|"ngx"?
---@return string? name
---@return imgedit.Error? err
function imgedit.runtime(name) end

return imgedit
