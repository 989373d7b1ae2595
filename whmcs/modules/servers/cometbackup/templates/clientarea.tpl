{* Comet Backup client area: account details, or a notice while it is set up. *}
{if $comet_setting_up}
  <div class="alert alert-info">Your backup account is being set up. This usually takes less than a minute; refresh this page to see its details.</div>
{elseif $comet_setup_failed}
  <div class="alert alert-warning">We could not finish setting up your backup account. Our team has been notified and will complete it shortly.</div>
{/if}
<div class="row">
  <div class="col-sm-5 text-right"><strong>Username</strong></div>
  <div class="col-sm-7">{$comet_username|escape}</div>
</div>
<div class="row">
  <div class="col-sm-5 text-right"><strong>Server address</strong></div>
  <div class="col-sm-7">{$comet_server_url|escape}</div>
</div>
{if $comet_devices_max}
<div class="row">
  <div class="col-sm-5 text-right"><strong>Devices allowed</strong></div>
  <div class="col-sm-7">{$comet_devices_max}</div>
</div>
{/if}
{if $comet_profile}
<div class="row">
  <div class="col-sm-5 text-right"><strong>Devices registered</strong></div>
  <div class="col-sm-7">{$comet_profile.devices}</div>
</div>
<div class="row">
  <div class="col-sm-5 text-right"><strong>Storage vaults</strong></div>
  <div class="col-sm-7">{$comet_profile.vaults}</div>
</div>
{/if}
<p class="text-muted">Download the Comet Backup client from the server address above and sign in with this username and your service password.</p>
