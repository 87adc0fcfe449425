// pagedisk control plane on Azure: a Flex Consumption Function App (Linux,
// Node.js 22) with a system-assigned managed identity, the registry storage
// account (its tables, the host's own state and the deployment container),
// the liveness account (the table agents write their heartbeats to),
// Application Insights on a Log Analytics workspace, the role assignments the
// identity needs, and optionally a first pool account.
//
// One account key is used, the liveness account's, and nothing else: the
// host, the deployment, the registry and the pools are reached with the
// identity, with shared key access off on their accounts. Agents beat with a
// Table SAS, which only an account key can sign (Table Storage has no user
// delegation SAS), so the liveness table has an account of its own; the
// control plane gets that account's connection string as an app setting, and
// agents get SAS tokens for their own row, never the key. A leaked key opens
// heartbeats only (docs/liveness.md). For volumes, agents get user
// delegation SAS tokens.
//
// Pools registered with a connection string (an account key or SAS) are
// refused unless poolKeys is allow. Allowed, their connection strings are
// kept in the registry sealed with secretsKey, which a reader of the
// registry does not have. This template never generates that key: one made
// anew on a redeployment would leave every sealed pool unreadable, so it is
// a parameter given on every deployment (or a Key Vault reference, which
// App Service resolves into the setting).
//
// The ARM template beside this file (azuredeploy.json, behind the Deploy to
// Azure button) is generated from it:
//   az bicep build --file bicep/main.bicep --outfile bicep/azuredeploy.json

@description('Prefix of every resource name: 2-20 lowercase letters, digits and hyphens.')
@minLength(2)
@maxLength(20)
param namePrefix string = 'pagedisk'

@description('Region of every resource; it must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('The admin API key (PAGEDISK_ADMIN_KEY). Generated when not given; a redeployment without it generates a new one, so pass the current key to keep it.')
@secure()
@minLength(32)
param adminKey string = newGuid()

@description('Whether pools may be registered with a connection string, which carries an account key or SAS (PAGEDISK_POOL_ACCOUNT_KEYS). refuse: managed-identity pools only. allow: needs secretsKey; only such pools let the control plane revoke a fenced writer\'s SAS before it expires.')
@allowed([
  'refuse'
  'allow'
])
param poolKeys string = 'refuse'

@description('The key sealing pool connection strings in the registry (PAGEDISK_SECRETS_KEY): 32 random bytes in base64 (openssl rand -base64 32), or a Key Vault reference to a secret holding them (@Microsoft.KeyVault(SecretUri=...), readable by the Function App\'s identity). Needed when poolKeys is allow. Never generated: pass the same value on every redeployment, or sealed pools cannot be opened.')
@secure()
param secretsKey string = ''

@description('Earlier sealing keys, comma-separated (PAGEDISK_SECRETS_KEY_PREVIOUS): they open what they sealed until the control plane\'s next start seals it again with secretsKey. Empty unless rotating.')
@secure()
param previousSecretsKeys string = ''

@description('Also create a storage account as a first pool, reached with the managed identity (register it afterwards with pagedisk pool add).')
param createPool bool = true

@description('SKU of that pool account: premium page blobs (Premium_LRS) for low latency, or standard.')
@allowed([
  'Premium_LRS'
  'Standard_LRS'
  'Standard_ZRS'
])
param poolSku string = 'Premium_LRS'

@description('Most instances the app scales out to. 10,000 idle agents make about 22 API requests/s (~0.13 a node-minute), about 1.1 in flight at ~50 ms, one instance; after an API outage every agent fetches its desired state within 8 s of jittered backoff, ~1,250 requests/s, ~63 in flight, about 4 instances at concurrency 16. The sweeper (8 passes a minute) runs on instances of its own. 40 is the least every region accepts; the cap bounds a runaway, it costs nothing while unused.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB. 512, the smallest: instances are billed memory x active seconds, at least 1 s per activity period, and the sweeper alone opens 8 periods a minute (one per pass, each under 0.4 s at 10,000 nodes), so the timer costs a quarter of what it does at 2048; the API is I/O-bound (Table Storage) and idle for idle agents (~0.13 requests a node-minute).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Concurrent HTTP executions per instance (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency). 16, set explicitly because the default follows instance memory (4 at 512 MB): API requests are short (~50 ms) and wait on Table Storage, so 16 in flight fit one 512 MB instance, and the API load of 10,000 idle agents (~22 requests/s, ~1.1 in flight) stays on one instance.')
@minValue(1)
param httpPerInstanceConcurrency int = 16

var suffix = uniqueString(resourceGroup().id, namePrefix)
// Storage account names: 3-24 lowercase letters and digits, unique in Azure.
var compactPrefix = take(replace(toLower(namePrefix), '-', ''), 7)
var registryAccountName = '${compactPrefix}reg${suffix}'
var poolAccountName = '${compactPrefix}pool${suffix}'
var livenessAccountName = '${compactPrefix}live${suffix}'
var functionAppName = '${namePrefix}-${suffix}'
var deploymentContainerName = 'app-package'
var poolContainerName = 'pagedisk'
var roles = {
  // Host state (timer locks, keys) and the deployment package.
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // The registry's tables.
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Pools: create containers and page blobs, lease and delete them, and Get
  // User Delegation Key (generateUserDelegationKey/action is part of this
  // role) to sign agents' SAS, which can grant no more than the role does.
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-insights-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource registry 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: registryAccountName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
  }
}

resource registryBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: registry
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: registryBlobs
  name: deploymentContainerName
}

// The liveness table (docs/liveness.md), made by the control plane on its
// first request. Shared key access stays on here, and only here: agents write
// their heartbeats with a Table SAS, and a Table SAS can only be signed with
// the account key (there is no user delegation SAS for tables). Nothing else
// lives in this account, so its key opens heartbeats and nothing more.
resource liveness 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: livenessAccountName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true
  }
}

resource pool 'Microsoft.Storage/storageAccounts@2023-05-01' = if (createPool) {
  name: poolAccountName
  location: location
  sku: {
    name: poolSku
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
  }
}

resource poolBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = if (createPool) {
  parent: pool
  name: 'default'
}

resource poolContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (createPool) {
  parent: poolBlobs
  name: poolContainerName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      // Every setting functions/settings.ts reads that differs from its default.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: registry.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'PAGEDISK_REGISTRY_ACCOUNT_URL'
          value: registry.properties.primaryEndpoints.table
        }
        {
          name: 'PAGEDISK_ADMIN_KEY'
          value: adminKey
        }
        {
          name: 'PAGEDISK_POOL_ACCOUNT_KEYS'
          value: poolKeys
        }
        {
          // A parameter, never generated here: a key that changed on a
          // redeployment would leave every sealed pool unreadable.
          name: 'PAGEDISK_SECRETS_KEY'
          value: secretsKey
        }
        {
          name: 'PAGEDISK_SECRETS_KEY_PREVIOUS'
          value: previousSecretsKeys
        }
        {
          // The liveness account's key, read at deployment. Bicep has no
          // secure marker for a resource property: the value is never an
          // output, and deployment history keeps parameters and outputs,
          // not resource bodies.
          name: 'PAGEDISK_LIVENESS_CONNECTION_STRING'
          value: 'DefaultEndpointsProtocol=https;AccountName=${liveness.name};AccountKey=${liveness.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${registry.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      // Sized for 10,000 idle nodes (see the parameters' descriptions and the
      // README's "Sizing for 10,000 nodes").
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

resource registryBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionApp.id, roles.blobDataOwner)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource registryTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionApp.id, roles.tableDataContributor)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource poolBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (createPool) {
  name: guid(pool.id, functionApp.id, roles.blobDataContributor)
  scope: pool
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Base URL of the control plane (PAGEDISK_API_URL).')
output apiUrl string = 'https://${functionApp.properties.defaultHostName}'

@description('Name of the Function App.')
output functionAppName string = functionApp.name

@description('Deploys the package built by npm run package.')
output deployCommand string = 'az functionapp deployment source config-zip --resource-group ${resourceGroup().name} --name ${functionApp.name} --src dist/pagedisk-functions.zip'

@description('Prints the admin key (PAGEDISK_API_KEY); it is an app setting, never an output.')
output adminKeyCommand string = 'az functionapp config appsettings list --resource-group ${resourceGroup().name} --name ${functionApp.name} --query "[?name==\'PAGEDISK_ADMIN_KEY\'].value" --output tsv'

@description('Name of the liveness account (the one account with shared key access; its key is the app setting PAGEDISK_LIVENESS_CONNECTION_STRING, never an output).')
output livenessAccountName string = liveness.name

@description('Blob endpoint of the pool account created here, or empty.')
output poolAccountUrl string = createPool ? pool.properties.primaryEndpoints.blob : ''

@description('Registers that pool account once the package is deployed, or empty.')
output registerPoolCommand string = createPool ? 'pagedisk pool add ${namePrefix} --managed-identity --account-url ${pool.properties.primaryEndpoints.blob} --container ${poolContainerName}' : ''
